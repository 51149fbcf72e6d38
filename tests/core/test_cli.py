"""`concerto` command line: argument and file checks before TensorFlow, one-line user errors.

Most cases run the CLI in a subprocess through ``BARE``: a wrapper that calls
``concerto_core.cli.main`` without executing the package ``__init__`` (which imports the whole
package) and reports afterwards whether TensorFlow or ``concerto_core.model`` was imported.
That isolates what the CLI itself imports before its checks; ``test_entry_point_...`` checks
the real ``python -m concerto_core.cli``.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from synthetic_data import simulate_groups

PACKAGE = Path(__file__).resolve().parents[2] / "concerto_core"
MARK = "CLI-IMPORTS "
BARE = f"""
import json, sys, types
package = types.ModuleType("concerto_core")
package.__path__ = [{str(PACKAGE)!r}]
sys.modules["concerto_core"] = package
from concerto_core.cli import main
try:
    code = main(sys.argv[1:])
finally:
    print({MARK!r} + json.dumps({{"tensorflow": "tensorflow" in sys.modules,
                                  "model": "concerto_core.model" in sys.modules}}), file=sys.stderr)
sys.exit(code)
"""


class Run:
    def __init__(self, proc):
        lines = proc.stderr.splitlines()
        marks = [json.loads(line[len(MARK):]) for line in lines if line.startswith(MARK)]
        self.code = proc.returncode
        self.stderr = "\n".join(line for line in lines if not line.startswith(MARK) and not _tf_chatter(line))
        self.imported = marks[-1] if marks else None


def _tf_chatter(line: str) -> bool:
    return "cudart_stub" in line or "absl::InitializeLog" in line or "oneDNN" in line


def concerto(*args, cwd=None, bare=True) -> Run:
    exe = [sys.executable, "-c", BARE] if bare else [sys.executable, "-m", "concerto_core.cli"]
    return Run(subprocess.run(exe + [str(a) for a in args], capture_output=True, text=True, cwd=cwd,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}))


def assert_fast_user_error(run: Run, *fragments):
    """Exit status 2, one line `concerto: error: ...` naming the fragments, no TensorFlow, no traceback."""
    assert run.code == 2, run.stderr
    assert run.stderr.count("\n") == 0 and run.stderr.startswith("concerto: error: "), run.stderr
    for fragment in fragments:
        assert fragment in run.stderr, (fragment, run.stderr)
    assert run.imported == {"tensorflow": False, "model": False}, run.imported


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A small .h5ad and a model pretrained on it with `concerto pretrain`."""
    root = tmp_path_factory.mktemp("cli")
    adata = simulate_groups(n_cells=120, n_genes=40, seed=1)
    adata.write_h5ad(root / "cells.h5ad")
    run = concerto("pretrain", "--input", root / "cells.h5ad", "--output", root / "model", "--batch-key", "batch",
                   "--epochs", 1, "--batch-size", 40, "--embedding-dim", 8, "--threads", 1, bare=False)
    assert run.code == 0, run.stderr[-2000:]
    return root


# --- finetune must never write into the pretrained model (issue 11 item 7: it replaced the weights)

@pytest.mark.parametrize("spelling", ["same", "relative", "symlink"])
def test_finetune_refuses_to_write_into_the_model_directory(files, tmp_path, spelling):
    model = files / "model"
    before = {f.name: sha256(f) for f in model.iterdir()}
    if spelling == "same":
        output, cwd = model, None
    elif spelling == "relative":
        output, cwd = Path("sub/../model"), files
        (files / "sub").mkdir(exist_ok=True)
    else:
        output, cwd = tmp_path / "link", None
        output.symlink_to(model, target_is_directory=True)
    run = concerto("finetune", "--model", model, "--input", files / "cells.h5ad", "--label-key", "group",
                   "--output", output, "--overwrite", cwd=cwd)
    assert_fast_user_error(run, "--model directory")
    assert {f.name: sha256(f) for f in model.iterdir()} == before


def test_map_refuses_a_finetune_dir_that_is_the_model(files):
    run = concerto("map", "--model", files / "model", "--reference", files / "cells.h5ad", "--query",
                   files / "cells.h5ad", "--label-key", "group", "--output", files / "mapped.h5ad",
                   "--finetune-dir", f"{files}/./model/")
    assert_fast_user_error(run, "--finetune-dir", "--model directory")


# --- output format and location

def test_embed_refuses_an_output_that_is_not_h5ad(files):
    run = concerto("embed", "--model", files / "model", "--input", files / "cells.h5ad", "--output", files / "z.csv")
    assert_fast_user_error(run, "--output", "must end in .h5ad")
    assert not (files / "z.csv").exists()


def test_output_in_a_missing_directory_is_refused_before_work(files):
    run = concerto("embed", "--model", files / "model", "--input", files / "cells.h5ad",
                   "--output", files / "no_such_dir" / "z.h5ad")
    assert_fast_user_error(run, "does not exist")


def test_output_in_a_read_only_directory_is_refused_before_work(files, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running as root: a mode-0500 directory is still writable")
        run = concerto("embed", "--model", files / "model", "--input", files / "cells.h5ad",
                       "--output", locked / "z.h5ad")
    finally:
        locked.chmod(0o700)
    assert_fast_user_error(run, "is not writable")


def test_output_must_not_replace_an_input(files):
    run = concerto("map", "--model", files / "model", "--reference", files / "cells.h5ad", "--query",
                   files / "cells.h5ad", "--label-key", "group", "--output", files / "." / "cells.h5ad")
    assert_fast_user_error(run, "is the --reference file")


# --- numbers out of range: argparse reports them, before anything is loaded

@pytest.mark.parametrize("command, option, value, expected", [
    ("embed", "--min-gene-overlap", "1.5", "must be in [0, 1], got 1.5"),
    ("embed", "--min-gene-overlap", "nan", "must be in [0, 1]"),
    ("map", "--k", "0", "must be >= 1, got 0"),
    ("map", "--threshold", "1.5", "must be in [0, 1], got 1.5"),
    ("classify", "--threshold", "-0.1", "must be in [0, 1]"),
    ("finetune", "--epochs", "0", "must be >= 1"),
    ("pretrain", "--batch-size", "1", "must be >= 2"),
    ("pretrain", "--dropout", "1", "must be in [0, 1)"),
    ("pretrain", "--lr", "0", "must be in (0, inf)"),
])
def test_numbers_out_of_range_are_argument_errors(files, command, option, value, expected):
    required = {
        "embed": ["--model", files / "model", "--input", files / "cells.h5ad", "--output", files / "e.h5ad"],
        "map": ["--model", files / "model", "--reference", files / "cells.h5ad", "--query", files / "cells.h5ad",
                "--label-key", "group", "--output", files / "m.h5ad"],
        "classify": ["--classifier", files / "model", "--input", files / "cells.h5ad", "--output", files / "c.h5ad"],
        "finetune": ["--model", files / "model", "--input", files / "cells.h5ad", "--label-key", "group",
                     "--output", files / "clf"],
        "pretrain": ["--input", files / "cells.h5ad", "--output", files / "new_model"],
    }[command]
    run = concerto(command, *required, option, value)
    assert_fast_user_error(run, f"argument {option}", expected, f"concerto {command} --help")


# --- inputs: missing, damaged, not AnnData, missing columns

def test_missing_input_is_reported_without_tensorflow(files):
    run = concerto("pretrain", "--input", files / "missing.h5ad", "--output", files / "x")
    assert_fast_user_error(run, "--input", "missing.h5ad does not exist")


def test_truncated_h5ad_is_one_clear_line(files, tmp_path):
    data = (files / "cells.h5ad").read_bytes()
    (tmp_path / "cut.h5ad").write_bytes(data[: len(data) // 2])
    run = concerto("embed", "--model", files / "model", "--input", tmp_path / "cut.h5ad", "--output", tmp_path / "o.h5ad")
    assert_fast_user_error(run, "cut.h5ad is damaged or truncated")


def test_non_hdf5_file_is_one_clear_line(files, tmp_path):
    (tmp_path / "table.h5ad").write_text("cell,gene1\nc1,3\n")
    run = concerto("finetune", "--model", files / "model", "--input", tmp_path / "table.h5ad",
                   "--label-key", "group", "--output", tmp_path / "clf")
    assert_fast_user_error(run, "table.h5ad is not an HDF5 file")


def test_damaged_model_manifest_is_one_clear_line(files, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "manifest.json").write_text("{ not json")
    run = concerto("embed", "--model", broken, "--input", files / "cells.h5ad", "--output", tmp_path / "o.h5ad")
    assert_fast_user_error(run, "--model", "not valid JSON")
    edited = tmp_path / "edited"
    edited.mkdir()
    for f in (files / "model").iterdir():
        (edited / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((edited / "manifest.json").read_text())
    manifest["batch_key"] = "group"
    (edited / "manifest.json").write_text(json.dumps(manifest))
    run = concerto("embed", "--model", edited, "--input", files / "cells.h5ad", "--output", tmp_path / "o.h5ad")
    assert_fast_user_error(run, "--model", "changed after the model was saved")


def test_missing_columns_are_found_before_tensorflow(files, tmp_path):
    run = concerto("finetune", "--model", files / "model", "--input", files / "cells.h5ad", "--label-key", "celltype",
                   "--output", tmp_path / "clf")
    assert_fast_user_error(run, "--label-key 'celltype' is not a column", "group")
    query = simulate_groups(n_cells=30, n_genes=40, seed=2)
    del query.obs["batch"]
    query.write_h5ad(tmp_path / "q.h5ad")
    run = concerto("embed", "--model", files / "model", "--input", tmp_path / "q.h5ad", "--output", tmp_path / "o.h5ad")
    assert_fast_user_error(run, "'batch', the model's batch key", "--batch-key none")


def test_classify_needs_a_classifier_directory(files, tmp_path):
    run = concerto("classify", "--classifier", files / "model", "--input", files / "cells.h5ad",
                   "--output", tmp_path / "o.h5ad")
    assert_fast_user_error(run, "holds a pretrained model, not a classifier")


# --- errors found while running: one line too; tracebacks with --debug or for bugs

def test_data_errors_while_running_are_one_line_and_debug_adds_the_traceback(files, tmp_path):
    other_genes = simulate_groups(n_cells=30, n_genes=40, seed=2)
    other_genes.var_names = [f"other{i}" for i in range(40)]
    other_genes.write_h5ad(tmp_path / "q.h5ad")
    args = ["embed", "--model", files / "model", "--input", tmp_path / "q.h5ad", "--output", tmp_path / "o.h5ad"]
    run = concerto(*args)
    last = run.stderr.splitlines()[-1]  # earlier lines: TensorFlow's start-up and the model's messages
    assert run.code == 2 and last.startswith("concerto: error: ") and "shares no features" in last, run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "o.h5ad").exists()
    assert "Traceback" in concerto(*args, "--debug").stderr


def test_internal_errors_keep_their_traceback(monkeypatch, capsys, files, tmp_path):
    from concerto_core import cli

    def broken(args, plan):
        raise RuntimeError("a bug")

    monkeypatch.setitem(cli.COMMANDS, "embed", (cli.COMMANDS["embed"][0], broken))
    code = cli.main(["embed", "--model", str(files / "model"), "--input", str(files / "cells.h5ad"),
                     "--output", str(tmp_path / "o.h5ad")])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and "RuntimeError: a bug" in err and "internal error" in err


def test_embed_runs_after_its_checks(files, tmp_path):
    import anndata as ad

    run = concerto("embed", "--model", files / "model", "--input", files / "cells.h5ad", "--output", tmp_path / "o.h5ad",
                   "--threads", 1)
    assert run.code == 0, run.stderr[-2000:]
    assert ad.read_h5ad(tmp_path / "o.h5ad").obsm["X_concerto"].shape == (120, 8)


def test_help_documents_the_checks():
    for command in ("pretrain", "embed", "map", "finetune", "classify"):
        run = subprocess.run([sys.executable, "-c", BARE, command, "--help"], capture_output=True, text=True)
        assert run.returncode == 0
        assert "checked before TensorFlow is loaded" in run.stdout and "exit status" in run.stdout, command
    finetune = subprocess.run([sys.executable, "-c", BARE, "finetune", "--help"], capture_output=True, text=True).stdout
    assert "symlink" in finetune and "never modified" in finetune


def test_entry_point_checks_arguments_without_tensorflow(tmp_path):
    """`python -m concerto_core.cli` (what the `concerto` script runs) including the package import."""
    probe = subprocess.run([sys.executable, "-c", "import sys, concerto_core; print('tensorflow' in sys.modules)"],
                           capture_output=True, text=True)
    assert probe.stdout.strip() == "False", "importing concerto_core must not load TensorFlow"
    probe_cli = [sys.executable, "-c", "import sys; from concerto_core.cli import main; code = main(sys.argv[1:]); "
                 "print('tensorflow' in sys.modules, file=sys.stderr); sys.exit(code)"]
    run = subprocess.run(probe_cli + ["embed", "--model", str(tmp_path / "m"), "--input", str(tmp_path / "a.h5ad"),
                                      "--output", str(tmp_path / "o.h5ad")], capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.splitlines()[-1] == "False", run.stderr
