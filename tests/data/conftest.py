"""Makes ``tests/data/fixtures.py`` importable as ``data_fixtures`` from the data tests under any
pytest import mode (the project uses ``--import-mode=importlib``, where test folders are not on
``sys.path``)."""

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location("data_fixtures", Path(__file__).with_name("fixtures.py"))
_module = importlib.util.module_from_spec(_spec)
sys.modules["data_fixtures"] = _module
_spec.loader.exec_module(_module)
