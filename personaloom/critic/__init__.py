"""Critic: the generator-critic stage.

Modules, each importing only those listed before it:
- `rule_critics`: the rule-critic plug-in API, loader and runner (the plug-ins themselves
  are files under the project's `validators/critics/`), and the reading of
  `validators/critics.yaml` (sections checked, YAML errors as file:line);
- `identity`: who a text is about: the persona's own name and gender, the names a text
  gives it (the identity critics and the dataset metric of personas called only by their
  own name);
- `judges`: LLM judges: prompts sent in one engine call, structured 1-5 scores parsed,
  retried, failed judgements recorded;
- `settings`: the critic settings of a project (`load_critic_config` -> `CriticConfig`:
  rule critics, judges per record kind, `Thresholds` of the decision), checked before
  anything is written;
- `decision`: the accept/reject policy (`decide`: rule critics and hard judges first, then
  the combined judge score), one critic pass over a batch (`review_records`), rejection
  rows and the per-round acceptance report;
- `fewshot`: selection of the best accepted examples;
- `rounds`: the rounds that regenerate what was rejected.
Guarantees: every rejection is returned as a record with critic, score and reason, never
dropped.

May import: `personaloom.generate`, `personaloom.engine`, `personaloom.taxonomy`, the
shared floor. Never dedup, publish, run or Prefect.
"""
