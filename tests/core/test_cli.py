"""Stage entry points: one line for user errors, tracebacks for bugs."""

import pytest

from deeplab.core.cli import stage_main
from deeplab.core.errors import ConfigError


def test_stage_main_keeps_tracebacks_of_programming_errors():
    @stage_main
    def user_error():
        raise ConfigError("pretrain.lr: expected a positive number")

    @stage_main
    def bug():
        raise ValueError("a bug in our code")

    with pytest.raises(SystemExit) as exit_info:
        user_error()
    assert exit_info.value.code == 2
    with pytest.raises(ValueError, match="a bug in our code"):
        bug()
