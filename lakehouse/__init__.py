"""The lakehouse: settings, tiering of hot day-partitions into Parquet, and queries over every tier."""
