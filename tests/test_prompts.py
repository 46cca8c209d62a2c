import pytest

from personaloom.generate.prompts import PromptError, PromptLibrary


def _library(tmp_path, name, text):
    (tmp_path / f"{name}.j2").write_text(text)
    return PromptLibrary(tmp_path)


def test_renders_variables(tmp_path):
    assert _library(tmp_path, "p", "Hi {{ who }}").render("p", who="Ana") == "Hi Ana"


def test_undefined_variable_names_the_file(tmp_path):
    lib = _library(tmp_path, "p", "Hi {{ whom }}")
    with pytest.raises(PromptError, match=r"p\.j2:1: undefined variable.*whom"):
        lib.render("p", who="Ana")


def test_syntax_error_names_file_and_line(tmp_path):
    lib = _library(tmp_path, "p", "line one\n{% if x %}\nno end")
    with pytest.raises(PromptError, match=r"p\.j2:\d+: template syntax error"):
        lib.render("p", x=1)


@pytest.mark.parametrize(
    "attack",
    [
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
        "{{ x.__class__.__base__ }}",
    ],
)
def test_sandbox_refuses_python_internals(tmp_path, attack):
    lib = _library(tmp_path, "p", attack)
    with pytest.raises(PromptError):
        lib.render("p", x=1)


def test_missing_template_names_the_path(tmp_path):
    with pytest.raises(PromptError, match=r"nope\.j2: prompt template not found"):
        PromptLibrary(tmp_path).render("nope")


def test_shipped_persona_prompts_render(repo_root):
    lib = PromptLibrary(repo_root / "prompts")
    text = lib.render(
        "persona_enrich",
        category="hobbies",
        persona_name="Ana Souza",
        profile=["demographics.age: 34"],
        established=[],
        fields=[{"key": "pet_peeve", "path": "x.pet_peeve", "description": "a pet peeve"}],
        fewshot="",
    )
    assert "pet_peeve" in text and "demographics.age: 34" in text
