"""Data: the SlimPajama reader, packing into fixed-length rows, Parquet shards, the offline corpus builder."""
