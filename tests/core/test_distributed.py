"""tf.distribute: two logical CPU devices and two local workers reproduce one-device training."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent

COMMON = """
import json, sys
sys.path.insert(0, "@HERE@")
import numpy as np
from synthetic_data import simulate_groups
from concerto_core import Concerto, ConcertoConfig
adata = simulate_groups(n_cells=240, n_genes=60, seed=9)
# Dropout 0: replicas draw their own masks, so only the deterministic part can match exactly.
cfg = ConcertoConfig(embedding_dim=16, batch_size=60, epochs=3, seed=1, dropout=0.0, precise_bn=False)
def run(strategy):
    m = Concerto(adata, batch_key="batch", config=cfg, verbose=False)
    m.train(strategy=strategy)
    return [h["loss"] for h in m.history], m.get_latent_representation(adata)
"""

LOGICAL = COMMON + """
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
single_loss, single_z = run(None)
mirrored_loss, mirrored_z = run(tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))
print(json.dumps({"single": single_loss, "mirrored": mirrored_loss,
                  "max_embedding_diff": float(np.abs(single_z - mirrored_z).max())}))
"""

WORKER = COMMON + """
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
loss, z = run(strategy)
print(json.dumps({"loss": loss, "z_sum": float(z.sum())}))
"""

SINGLE = COMMON + """
loss, z = run(None)
print(json.dumps({"loss": loss, "z_sum": float(z.sum())}))
"""


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


@pytest.mark.slow
def test_mirrored_two_logical_devices_matches_one_device():
    out = subprocess.run([sys.executable, "-c", LOGICAL.replace("@HERE@", str(HERE))], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = _last_json(out.stdout)
    print("\n", result)
    np.testing.assert_allclose(result["mirrored"], result["single"], rtol=2e-4)
    assert result["max_embedding_diff"] < 1e-3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_workers_over_loopback_match_one_device():
    ports = [_free_port(), _free_port()]
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen([sys.executable, "-c", WORKER.replace("@HERE@", str(HERE))], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        outputs.append(_last_json(stdout))
    single = subprocess.run([sys.executable, "-c", SINGLE.replace("@HERE@", str(HERE))], capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    reference = _last_json(single.stdout)
    print("\n", outputs, reference)
    for worker in outputs:
        np.testing.assert_allclose(worker["loss"], reference["loss"], rtol=2e-4)
