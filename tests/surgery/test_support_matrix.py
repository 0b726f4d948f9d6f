"""The README's support matrix is the one the grid's settings table generates."""

from __future__ import annotations

from support_matrix import README, matrix, readme_block


def test_readme_matrix_matches_the_grid() -> None:
    assert readme_block(README.read_text()) == matrix(), (
        "README.md's support matrix differs from the grid's settings table; "
        "run `python tests/surgery/support_matrix.py --write`"
    )
