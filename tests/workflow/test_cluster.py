"""Cluster execution: the slurm profile plans the default workflow (dry run, no slurm here),
and the local-cluster profile submits real jobs through the cluster-generic executor
(profiles/local-cluster/submit.sh runs them in the background on this machine)."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "tests" / "configs" / "tiny.yaml"
SLURM = REPO / "profiles" / "slurm"
LOCAL_CLUSTER = REPO / "profiles" / "local-cluster"


def snakemake(*args, cwd=REPO, timeout=600):
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def job_records(workdir):
    """{rule: [resources dict per submitted job]} from submit.sh's per-job files."""
    out = {}
    for f in sorted((workdir / ".snakemake" / "local-cluster").glob("*/resources")):
        rec = dict(line.split("=", 1) for line in f.read_text().splitlines())
        rec["status"] = (f.parent / "status").read_text().strip()
        out.setdefault(rec["rule"], []).append(rec)
    return out


# ---- slurm: dry run only (no sbatch is called in a dry run, so no stand-ins are needed) ----

def test_slurm_profile_requests_gpu_and_scales_memory():
    prof = yaml.safe_load((SLURM / "config.yaml").read_text())
    assert prof["executor"] == "slurm" and prof["retries"] >= 1
    assert {"slurm_account", "slurm_partition", "mem_mb", "runtime"} <= set(prof["default-resources"])
    assert "attempt" in prof["default-resources"]["mem_mb"]
    train = prof["set-resources"]["train_concerto"]
    assert "gres" not in train and "attempt" in train["mem_mb"]
    # the GPU request comes from the rule itself; the commented gres alternative turns it off
    assert "gpu=1," in (REPO / "rules" / "engine.smk").read_text()
    text = (SLURM / "config.yaml").read_text()
    assert '# gres: "gpu:1"' in text and "# gpu: 0" in text
    # every rule named in the profile exists (a typo would silently configure nothing)
    rules = "".join(p.read_text() for p in (REPO / "rules").glob("*.smk"))
    for rule in list(prof["set-resources"]) + list(prof.get("set-threads", {})):
        assert f"rule {rule}:" in rules, rule


def _filled_slurm_profile(tmp_path):
    """A copy of the slurm profile with its placeholders filled in, as a user would."""
    prof = tmp_path / "slurm"
    prof.mkdir()
    text = (SLURM / "config.yaml").read_text()
    for placeholder, value in (("<your_account>", "lab"), ("<cpu_partition>", "cpu"), ("<gpu_partition>", "gpu")):
        text = text.replace(placeholder, value)
    (prof / "config.yaml").write_text(text)
    return prof


@pytest.mark.parametrize("flag", ["--profile", "--workflow-profile"])
def test_slurm_profile_dry_run_plans_default_workflow(tmp_path, flag):
    # in an empty directory, so the full default DAG is planned whatever results/ holds
    work = tmp_path / "work"
    work.mkdir()
    r = snakemake("-n", flag, str(_filled_slurm_profile(tmp_path)), "-s", str(REPO / "Snakefile"),
                  "--directory", str(work))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "This was a dry-run" in log
    for rule in ("make_split", "preprocess", "train_concerto", "run_method", "all"):
        assert rule in log, rule
    assert "Submitted" not in log  # planned, nothing submitted


def test_slurm_profile_with_placeholders_is_refused_at_the_dry_run(tmp_path):
    r = snakemake("-n", "--workflow-profile", str(SLURM), "-s", str(REPO / "Snakefile"), "--directory",
                  str(tmp_path))
    log = r.stdout + r.stderr
    assert r.returncode != 0 and "<your_account>" in log and "profiles/slurm/config.yaml" in log


# ---- local-cluster: real jobs through the cluster-generic executor ----

@pytest.mark.slow
def test_local_cluster_runs_tiny_mapping_jobs(tmp_path):
    """prepare -> split -> preprocess -> train Concerto -> run Concerto + PCA, as six submitted jobs."""
    targets = ["results/tiny_mapping/holdout/hvg150/concerto/seed0.h5ad",
               "results/tiny_mapping/holdout/hvg150/pca/seed0.h5ad"]
    r = snakemake(*targets, "--profile", str(LOCAL_CLUSTER), "--workflow-profile", "none",
                  "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                  "--configfile", str(TINY), timeout=300)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-5000:]
    for t in targets:
        assert (tmp_path / t).stat().st_size > 1000, t
    assert "Submitted job" in log and "external jobid" in log
    jobs = job_records(tmp_path)
    assert set(jobs) == {"prepare_dataset", "make_split", "preprocess", "train_concerto", "run_method"}, jobs
    assert len(jobs["run_method"]) == 2
    for rule, recs in jobs.items():
        assert all(r["status"] == "success" for r in recs), (rule, recs)
        assert all(int(r["mem"]) > 0 and r["runtime"] for r in recs), (rule, recs)
    # the rules' own resources reach the submit command: mem_mb and the training GPU
    assert jobs["train_concerto"][0]["mem"] == "8000" and jobs["train_concerto"][0]["gpus"] == "1"
    assert {r["mem"] for r in jobs["run_method"]} == {"6000"}
    assert jobs["prepare_dataset"][0]["gpus"] == "0"
    # each job's stdout/stderr went to its own log file
    for f in (tmp_path / ".snakemake" / "local-cluster").glob("*/resources"):
        assert (f.parent / "log").stat().st_size > 0, f.parent


RETRY_SNAKEFILE = """
# A job that fails unless it was given >= 3000 MB: the first attempt gets 2000 (the profile's
# default "2000 * attempt"), the retry 4000.
rule all:
    input: "done.txt"

rule needs_memory:
    output: "done.txt"
    shell: "test {resources.mem_mb} -ge 3000 && echo {resources.mem_mb} > {output}"
"""


@pytest.mark.slow
def test_local_cluster_retries_with_attempt_scaled_memory(tmp_path):
    (tmp_path / "Snakefile").write_text(textwrap.dedent(RETRY_SNAKEFILE))
    # the profile's submit command is {workflow.basedir}/profiles/local-cluster/submit.sh
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "local-cluster").symlink_to(LOCAL_CLUSTER)
    r = snakemake("--profile", str(LOCAL_CLUSTER), "--workflow-profile", "none",
                  "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), timeout=120)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    recs = job_records(tmp_path)["needs_memory"]
    assert [(x["mem"], x["status"]) for x in recs] == [("2000", "failed"), ("4000", "success")]
    assert (tmp_path / "done.txt").read_text().strip() == "4000"

    # without retries the same job fails the run
    (tmp_path / "done.txt").unlink()
    r = snakemake("--profile", str(LOCAL_CLUSTER), "--workflow-profile", "none", "--retries", "0",
                  "-s", str(tmp_path / "Snakefile"), "--directory", str(tmp_path), timeout=120)
    assert r.returncode != 0 and not (tmp_path / "done.txt").exists()


# ---- scale benchmark: an opt-in target ----

def _scale_config(tmp_path, **scale):
    """The default study with the scale benchmark switched on (a copy of config.yaml, as a user would)."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg["benchmarks"]["scale"] = scale
    path = tmp_path / "scale.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return ("-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile", str(path))


def test_scale_benchmark_is_opt_in(tmp_path):
    r = snakemake("-n", "--cores", "2", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "\nscale_benchmark " not in r.stdout + r.stderr and "Scale benchmark:" not in r.stdout
    r = snakemake("-n", "--cores", "2", *_scale_config(tmp_path, enabled=True))
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    for rule in ("scale_benchmark", "fig_scale_benchmark"):
        assert f"\n{rule} " in log, rule  # a row of the job-stats table
    assert "1000000 cells x 20000 genes, 100000 query cells" in log  # schema defaults


def test_scale_benchmark_config_errors_name_the_key(tmp_path):
    r = snakemake("-n", *_scale_config(tmp_path, enabled=True, cells=1500, query_cells=1000))
    assert r.returncode != 0 and "benchmarks.scale.cells" in r.stdout + r.stderr
    r = snakemake("-n", *_scale_config(tmp_path, enabled=True, cels=10))  # typo
    assert r.returncode != 0 and "cels" in r.stdout + r.stderr


@pytest.mark.slow
def test_scale_benchmark_tiny_run(tmp_path):
    """The target end to end at 2,000 cells (about 30 s): summary JSON and figure."""
    common = _scale_config(tmp_path, enabled=True, cells=2000, genes=200, query_cells=1000,
                           batch_size=128)
    r = snakemake("results/figures/scale_benchmark.png", "--cores", "2", *common, timeout=300)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    summary = json.loads((tmp_path / "results/benchmarks/scale.json").read_text())
    assert summary["cells"] == 2000 and 0 <= summary["mapping_accuracy"] <= 1
    phases = {p["phase"].split(" (")[0]: p for p in summary["phases"]}
    assert {"pretrain", "reference embedding", "query embedding + 5-NN mapping"} <= set(phases)
    assert all(p["seconds"] >= 0 and p["peak_rss_gib"] > 0 for p in phases.values())
    assert (tmp_path / "results/figures/scale_benchmark.png").stat().st_size > 1000
