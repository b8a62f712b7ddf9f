"""Scale-out: encoding on Ray, an index split into shards.

Owns: ``ray_engine`` (an encoding engine on a Ray actor pool, the ``ray``
extra), ``shards`` (``ShardedIndex``: documents routed by id to several plain
indexes), ``split`` (one index cut into shards without re-encoding) and
``operations`` (reading back, deleting by filter, backup and compaction over shards).

May import: anything in ``index`` (it builds on ``indexer.Index``); nothing
else in ``index`` imports it (``search`` and the CLI do).
"""
