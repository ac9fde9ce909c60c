"""cmrecon.params: nested sections (the training config's); flat step parameters are pinned in
tests/core/test_chains.py.
"""

from dataclasses import dataclass, field
from typing import Optional

import pytest

from cmrecon.errors import ChainError
from cmrecon.params import parse_params


@dataclass(frozen=True)
class Inner:
    lr: float = field(default=1e-3, metadata={"doc": "learning rate"})
    clip: Optional[float] = field(default=None, metadata={"doc": "gradient clip"})


@dataclass(frozen=True)
class Outer:
    name: str = field(default="run", metadata={"doc": "name"})
    optim: Inner = field(default_factory=Inner)


def test_a_dataclass_field_is_a_section_parsed_from_a_mapping():
    assert parse_params(Outer, {"optim": {"lr": "0.5"}}) == Outer(optim=Inner(lr=0.5))
    assert parse_params(Outer, {"optim": None}) == Outer()  # an empty YAML section
    assert parse_params(Outer, {}).optim == Inner()


def test_section_errors_name_the_section_and_the_key():
    with pytest.raises(ChainError, match=r"cfg section 'optim': unknown parameter\(s\) rate"):
        parse_params(Outer, {"optim": {"rate": 1}}, "cfg")
    with pytest.raises(ChainError, match=r"cfg section 'optim' parameter 'lr' expects float"):
        parse_params(Outer, {"optim": {"lr": "fast"}}, "cfg")
    with pytest.raises(ChainError, match=r"cfg section 'optim' expects a mapping, got 3"):
        parse_params(Outer, {"optim": 3}, "cfg")
