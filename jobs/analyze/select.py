"""Which items a contrast uses: violation items by tag (``tags: [value-specific]``) and by the teacher
manipulation check (``valid_only``), with the neutral items paired with them.

A selecting contrast is rewritten to point at derived sets, ``violations-graminist[value-specific]``
and ``neutral-graminist[value-specific]``, whose rows are the selected rows of the original sets;
the frame returned holds the original rows plus the derived ones. The contrast code then runs
unchanged, every contrast stays in one family (one Holm adjustment), and the derived names say in
``contrasts.csv`` which items a row rests on. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from jobs.analyze.config import HeadlineContrast

#: (eval set, item id) -> the item's tags
Tags = Mapping[tuple[str, str], frozenset[str]]
#: (violation set, item id) -> valid in the manipulation check (None: could not be told)
Validity = Mapping[tuple[str, str], bool | None]


def suffix(c: HeadlineContrast) -> str:
    """The selection a contrast makes, as the suffix of its derived set names ('' for none)."""
    parts = ["|".join(c.tags)] if c.tags else []
    if c.valid_only:
        parts.append("valid")
    return f"[{','.join(parts)}]" if parts else ""


def item_tags(df: pd.DataFrame) -> dict[tuple[str, str], frozenset[str]]:
    """Tags per (set, item) from the frame's ``tags`` column (a tuple per row), where it has one."""
    if "tags" not in df.columns or df.empty:
        return {}
    pairs = df[["evalset", "item_id", "tags"]].drop_duplicates(["evalset", "item_id"])
    return {
        (es, item): frozenset(t for t in (tags if isinstance(tags, tuple | list) else ()) if t)
        for es, item, tags in pairs.itertuples(index=False)
    }


def selected_items(df: pd.DataFrame, c: HeadlineContrast, tags: Tags, validity: Validity) -> set[str]:
    """The violation items of ``c.violations`` that the contrast keeps."""
    items = set(df.loc[df["evalset"] == c.violations, "item_id"].unique())
    if c.tags:
        want = set(c.tags)
        items = {i for i in items if want & tags.get((c.violations, i), frozenset())}
    if c.valid_only:
        items = {i for i in items if validity.get((c.violations, i)) is True}
    return items


def apply(
    df: pd.DataFrame, contrasts: Sequence[HeadlineContrast], tags: Tags, validity: Validity
) -> tuple[pd.DataFrame, list[HeadlineContrast]]:
    """The frame with a derived set per selecting contrast, and the contrasts rewritten to use them
    (in the same order). A contrast that selects nothing is returned as is, with the frame unchanged."""
    extra: dict[str, pd.DataFrame] = {}
    out: list[HeadlineContrast] = []
    for c in contrasts:
        tag = suffix(c)
        if not tag:
            out.append(c)
            continue
        v_name = c.violations + tag
        keep = selected_items(df, c, tags, validity)
        if v_name not in extra:
            rows = df[(df["evalset"] == c.violations) & df["item_id"].isin(keep)]
            extra[v_name] = rows.assign(evalset=v_name)
        u_name = None
        if c.neutral is not None:
            u_name = c.neutral + tag
            if u_name not in extra:
                # a neutral item follows its violation item; one without a pair cannot be placed
                rows = df[(df["evalset"] == c.neutral) & df["pair"].isin(keep)]
                extra[u_name] = rows.assign(evalset=u_name)
        out.append(
            c.model_copy(update={"violations": v_name, "neutral": u_name, "tags": None, "valid_only": False})
        )
    if not extra:
        return df, out
    return pd.concat([df, *extra.values()], ignore_index=True), out
