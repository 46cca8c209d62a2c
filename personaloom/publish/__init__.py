"""Publish: what leaves the run folder.

Holds atomic sharded Parquet writing (`shards`), corpus metrics (`metrics`), the dataset
card and its charts (`card`, `charts`, template in `templates/card.md.j2`), the Hub client
(`hub`) and releases to the Hub or a local git repository (`release/`). Guarantees: a
reader never sees a half-written shard or card; `HF_TOKEN` is never written or printed.

May import: `personaloom.state` (run lock and run state), `personaloom.dedup`,
`personaloom.critic` (names and word counts), the shared floor. Never the run layer or
Prefect: the Prefect Secret block is looked up by the flows and handed in.
"""
