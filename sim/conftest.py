"""Makes sim/ helpers importable in the pytest drivers; the rtlsim backend's tests share the plain engine
build of the other tests instead of compiling a profile-guided one (twice the compile; its steps are
tested in tests/test_rtlsim_config.py)."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TRILEVEL_RTLSIM_PGO", "0")
