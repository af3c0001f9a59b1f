"""The console script hides third-party notices a user cannot act on, and nothing else."""

from __future__ import annotations

import logging
import warnings

import pytest

from app.cli import quiet_third_party


def test_lightning_tip_and_pytree_deprecation_are_hidden(caplog: pytest.LogCaptureFixture) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_third_party()
        quiet_third_party()  # idempotent: one filter per logger
        warnings.warn(
            "`isinstance(treespec, LeafSpec)` is deprecated, use x", FutureWarning, stacklevel=1
        )
        warnings.warn("something a user should see", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["something a user should see"]
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    assert len(logger.filters) == 1
    with caplog.at_level(logging.INFO, logger=logger.name):
        logger.info("💡 Tip: For seamless cloud logging ...")
        logger.info("GPU available: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False"]
