"""The hot store's side of tiering: the :class:`~magsag.backends.tiering.protocol.TierSource`
protocol every hot store implements for the tiering job (``magsag.lakehouse.tiering``)."""
