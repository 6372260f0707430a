"""The hot store's side of tiering: the :class:`~magsag.backends.tiering.protocol.TierSource`
protocol every hot store implements for the tiering job (``magsag.lakehouse.tiering``), the
claim ledger's state machine both stores share (``ledger``), and the part of every
implementation written once (``base``)."""
