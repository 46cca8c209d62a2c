"""Evaluate: a released corpus as a memory benchmark for chat models (`personaloom eval`).

Holds reading a corpus through `datasets` (`dataset`: a local folder or
`hf://datasets/ORG/NAME@TAG`), the context policies that turn a persona's earlier sessions
into chat history (`context`: full, recent:N, none, within the model's token budget),
asking the model each probe with a constrained answer and resuming a run (`runner`),
accuracy with bootstrap intervals per probe type and per distance, chance and leak flags
(`scoring`), and the report, chart and leaderboard (`report`). Guarantees: every probe asked
gets a row in DIR/results.parquet whatever the model answered; a re-run asks only the
probes not yet answered; results are written atomically after every batch.

May import: `personaloom.publish` (the Hub client), `personaloom.engine`, the shared floor.
A sibling of the run layer: it imports no run, no stage, and never Prefect (`flows/evaluate.py`
wraps `runner.evaluate`).
"""
