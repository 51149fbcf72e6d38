"""Moana's classifier on one fold, run by the legacy interpreter (``.venv-moana``, see
``envs/install_moana.sh``): imports only the standard library, numpy, pandas and moana, because
the project's own code needs numpy 2 and moana 0.1.1 needs numpy < 2.

    python moana_legacy_runner.py --check              exit 0 when moana imports here
    python moana_legacy_runner.py IN.npz OUT.npz PARAMS_JSON

IN.npz (written by :mod:`concerto_workflow.methods.moana`): ``train_x`` (n_train, G) and
``test_x`` (n_test, G) expression on the count scale, ``genes`` (G,), ``labels`` (n_train,).
OUT.npz: ``classes`` (C,) Moana's class order, ``predicted`` (n_test,) Moana's labels,
``decision`` (n_test, C(C-1)/2) its one-vs-one SVM decision values, ``train_pcs`` /
``test_pcs`` the cells in the classifier's PC space, ``test_k`` the smoothing k applied to the
test cells.
"""
import collections
import collections.abc
import json
import logging
import os
import sys
import warnings

# this file sits beside the project's adapter methods/moana.py: `import moana` must find the package
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]


def _apply_shims():
    """Runtime shims for running moana 0.1.1 (written for Python 3.5-3.7) on Python 3.11 with
    the newest numpy < 2 / pandas < 2 / scikit-learn < 1.4 (the pins of
    envs/moana-requirements.txt); the installed package itself is not changed.

    * ``from collections import Iterable`` (moana, plotly 2.7): the ABC aliases Python 3.10
      removed from ``collections`` point at ``collections.abc`` again;
    * ``moana.__version__ = pkg_resources.require('moana')[0].version`` re-checks moana's
      declared pins (pandas < 1, scikit-learn < 1: no Python 3.11 builds) and raises
      VersionConflict: the version is read without that check.
    """
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)   # pandas 1.5 on iteritems
    for name in collections.abc.__all__:
        if not hasattr(collections, name):
            setattr(collections, name, getattr(collections.abc, name))
    import pkg_resources

    require = pkg_resources.require

    def require_without_pins(*requirements):
        try:
            return require(*requirements)
        except pkg_resources.VersionConflict:
            return [pkg_resources.get_distribution(str(r)) for r in requirements]

    pkg_resources.require = require_without_pins


def main(argv):
    _apply_shims()
    import moana  # noqa: F401  (after the shims)

    if argv[1:] == ["--check"]:
        print("moana", moana.__version__)
        return 0
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    import numpy as np
    from moana.classify import CellTypeClassifier
    from moana.core import CellAnnVector, ExpMatrix

    logging.basicConfig(level=logging.INFO, stream=sys.stdout,
                        format="%(levelname)s %(name)s: %(message)s")
    in_path, out_path, params = argv[1], argv[2], json.loads(argv[3])
    with np.load(in_path, allow_pickle=False) as z:
        train_x, test_x = z["train_x"], z["test_x"]
        genes, labels = [str(g) for g in z["genes"]], [str(v) for v in z["labels"]]
    # Moana's matrices are genes x cells
    train = ExpMatrix(genes=genes, cells=[f"train{i}" for i in range(len(train_x))], X=train_x.T.copy())
    test = ExpMatrix(genes=genes, cells=[f"test{i}" for i in range(len(test_x))], X=test_x.T.copy())
    clf = CellTypeClassifier(**params)
    clf.fit(train, CellAnnVector(cells=train.cells, data=labels))
    predicted = clf.predict(test)
    smoothed, test_k = clf.smoothing_model_.transform(test)
    test_pcs = clf.pca_model_.transform(smoothed)           # what predict() classified
    train_pcs = clf.transform(train)
    decision = clf.svm_model_.decision_function(test_pcs.T)
    np.savez(out_path, classes=np.asarray([str(c) for c in clf.classes_]),
             predicted=np.asarray([str(v) for v in predicted.values]),
             decision=np.asarray(decision, dtype=np.float64).reshape(len(test_x), -1),
             train_pcs=np.asarray(train_pcs.values.T, dtype=np.float64),
             test_pcs=np.asarray(test_pcs.values.T, dtype=np.float64), test_k=np.asarray(test_k))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
