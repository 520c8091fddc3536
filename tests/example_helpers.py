"""What the tests of ``examples/`` share. Importing this puts ``examples/`` on ``sys.path``, so
the tests import each example as a module and call its ``main(argv)`` in-process."""

import os
import sys

import pytest

# The examples need these (requirements-test.txt); where they are missing (a bare GPU machine)
# the example tests skip instead of failing at import.
for _package in ("numpy", "tqdm", "matplotlib"):
    pytest.importorskip(_package)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")
if EXAMPLES not in sys.path:
    sys.path.insert(0, EXAMPLES)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png_image(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE, f"{path} is not a PNG file"
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def assert_bad_argument(main, argv, message, capsys):
    """``main(argv)`` stops as argparse does (exit status 2) and says ``message``."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
