"""The capstone check under the name released notebooks import it by
(``from autograder.checks.capstone import THRESHOLD, accuracy``); it lives in :mod:`.model`."""

from .model import CAPSTONE_POINTS, SEQ_LEN, THRESHOLD, VOCAB, accuracy, check_capstone, held_out  # noqa: F401
