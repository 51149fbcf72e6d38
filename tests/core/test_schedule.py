"""The training schedule chosen from the data size (``choose_schedule``) and the named presets."""

import json

import numpy as np
import pytest

from concerto_core.config import PRESETS, SCHEDULE_RULE, ConcertoConfig, choose_schedule


def test_small_reference_gets_at_least_the_minimum_number_of_steps():
    s = choose_schedule(175)
    assert s.steps >= SCHEDULE_RULE["min_steps"]
    assert s.batch_size == SCHEDULE_RULE["min_batch_size"]  # 175 / 32 cells is below the floor of 32
    assert (s.epochs_from, s.batch_size_from) == ("rule", "rule")
    assert "175 cells" in s.reason and "steps" in s.reason
    # the old fixed default (256 x 3) gave this reference 3 optimizer steps in all
    assert choose_schedule(175, epochs=3, batch_size=256).steps == 3


def test_fewer_cells_than_the_batch_floor_use_one_batch_of_all_cells():
    s = choose_schedule(20)
    assert s.batch_size == 20 and s.steps_per_epoch == 1 and s.epochs == SCHEDULE_RULE["max_epochs"]


@pytest.mark.parametrize("n", [17_100, 100_000, 2_000_000])
def test_large_reference_keeps_the_large_data_schedule(n):
    s = choose_schedule(n)
    assert (s.batch_size, s.epochs) == (SCHEDULE_RULE["max_batch_size"], SCHEDULE_RULE["epochs"])


def test_explicit_values_win():
    s = choose_schedule(175, epochs=1, batch_size=100)
    assert (s.epochs, s.batch_size, s.steps) == (1, 100, 2)
    assert (s.epochs_from, s.batch_size_from) == ("given", "given")
    half = choose_schedule(175, epochs=2)            # batch from the rule, epochs as given
    assert half.epochs == 2 and half.batch_size_from == "rule" and half.epochs_from == "given"


def test_training_settings_resolve_arguments_over_config_over_rule():
    pytest.importorskip("tensorflow")
    from concerto_core.training import TrainingSettings

    cfg = ConcertoConfig(epochs=4)                   # batch_size None: from the rule
    settings, schedule = TrainingSettings.resolve(cfg, 1000)
    assert (settings.epochs, settings.batch_size) == (4, 32) and schedule.epochs_from == "given"
    settings, _ = TrainingSettings.resolve(cfg, 1000, epochs=2, batch_size=50)
    assert (settings.epochs, settings.batch_size) == (2, 50)
    with pytest.raises(ValueError, match="number of\n?.*training cells is unknown|training cells is unknown"):
        TrainingSettings.from_config(cfg)            # no cell count: the None batch size cannot be chosen


def test_schedule_is_logged_and_recorded_in_the_manifest(tmp_path, caplog):
    pytest.importorskip("tensorflow")
    import anndata as ad
    import scipy.sparse as sp

    from concerto_core import Concerto

    rng = np.random.default_rng(0)
    adata = ad.AnnData(sp.csr_matrix(np.log1p(rng.poisson(1.0, size=(90, 12)).astype(np.float32))))
    model = Concerto(adata, config=ConcertoConfig(embedding_dim=8, epochs=1, precise_bn=False), verbose=True)
    with caplog.at_level("INFO", logger="concerto_core"):
        model.train()
    assert any("schedule for 90 cells" in r.getMessage() for r in caplog.records)
    assert model.schedule["batch_size"] == 32 and model.schedule["batch_size_from"] == "rule"
    assert model.schedule["epochs"] == 1 and model.schedule["steps"] == 3
    model.save(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "manifest.json").read_text())["training_schedule"]
    assert saved["batch_size"] == 32 and saved["rule"] == SCHEDULE_RULE and "reason" in saved
    assert Concerto.load(tmp_path / "m", verbose=False).schedule == saved


def test_presets():
    paper = ConcertoConfig.from_preset("paper", seed=3)
    assert (paper.batch_size, paper.epochs, paper.lr, paper.lr_end, paper.seed) == (32, 3, 1e-4, 1e-6, 3)
    small = ConcertoConfig.from_preset("small_reference")
    assert (small.batch_size, small.epochs, small.lr, small.lr_end) == (32, 3, 1e-3, 1e-4)
    assert set(PRESETS) == {"paper", "small_reference"}
    with pytest.raises(ValueError, match="unknown preset 'fast'.*paper"):
        ConcertoConfig.from_preset("fast")


def test_preset_and_config_together_are_refused():
    pytest.importorskip("tensorflow")
    import anndata as ad

    from concerto_core import Concerto

    adata = ad.AnnData(np.eye(4, dtype=np.float32) + 1)
    with pytest.raises(ValueError, match="either config or preset"):
        Concerto(adata, config=ConcertoConfig(), preset="paper", verbose=False)
