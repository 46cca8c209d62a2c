"""The vLLM engine keeps the model's bfloat16 only where the CPU computes it natively."""

from __future__ import annotations

from pathlib import Path

from personaloom.engine.vllm_engine import cpu_has_bf16

AVX2 = "processor\t: 0\nflags\t\t: fpu vme sse2 avx avx2 fma\n"


def test_an_avx2_cpu_has_no_bf16(tmp_path: Path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text(AVX2)
    assert cpu_has_bf16(str(info)) is False


def test_avx512_bf16_or_amx_counts(tmp_path: Path) -> None:
    for flag in ("avx512_bf16", "amx_bf16"):
        info = tmp_path / flag
        info.write_text(AVX2.replace("fma", f"fma {flag}"))
        assert cpu_has_bf16(str(info)) is True


def test_an_unreadable_cpuinfo_keeps_the_models_dtype(tmp_path: Path) -> None:
    assert cpu_has_bf16(str(tmp_path / "missing")) is True
    (tmp_path / "empty").write_text("processor\t: 0\n")
    assert cpu_has_bf16(str(tmp_path / "empty")) is True
