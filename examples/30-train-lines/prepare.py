"""Label the lines of real Python source files (the installed standard library) for the RNN example.

Each line of each file becomes a row: `file` (document id), `line` (position),
`label` (code | comment | docstring | blank, from Python's own tokenizer and
ast), the raw `text` (not a feature: it is not numeric), and numeric features:
hashed character 3-grams of the stripped line plus a few shape features.
The label is never a feature by itself: a docstring's middle line is plain
prose, and only the surrounding lines (the window the RNN reads) tell it
apart from code.

data/lines.parquet          training files
data/lines-holdout.parquet  different files, same columns (examples/40-predict-lines)

No download: the files are those of the Python running this script, chosen
deterministically (by a hash of the file name) so train and holdout never share
a file.
"""

from __future__ import annotations

import ast
import io
import sysconfig
import tokenize
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

HASH_BUCKETS = 48
NGRAM = 3
TRAIN_FILES = 50
HOLDOUT_FILES = 15
MIN_BYTES, MAX_BYTES = 3_000, 25_000
SHAPE_FEATURES = [
    "indent", "length", "alpha", "digit", "space", "punct", "upper",
    "starts_hash", "has_hash", "starts_quote", "has_triple", "ends_colon",
    "ends_paren", "has_equals", "keyword_start", "dedent",
]
KEYWORDS = ("def ", "class ", "return", "if ", "for ", "while ", "import ", "from ", "elif ", "else",
            "try", "except", "with ", "raise", "yield", "assert", "pass", "break", "continue")


def docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                    and isinstance(first.value.value, str):
                lines.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    return lines


def comment_lines(source: str) -> set[int]:
    """Lines whose only token is a comment (a trailing comment leaves the line code)."""
    code_lines: set[int] = set()
    comments: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments.add(token.start[0])
        elif token.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                                tokenize.ENDMARKER):
            code_lines.update(range(token.start[0], token.end[0] + 1))
    return comments - code_lines


def line_features(text: str, previous_indent: int) -> list[float]:
    stripped = text.strip()
    indent = len(text) - len(text.lstrip(" "))
    n = max(1, len(stripped))
    grams = np.zeros(HASH_BUCKETS)
    padded = f"^{stripped}$"
    for i in range(len(padded) - NGRAM + 1):
        grams[zlib.crc32(padded[i:i + NGRAM].encode()) % HASH_BUCKETS] += 1
    if grams.sum():
        grams /= np.sqrt(grams.sum())
    shape = [
        indent / 16, min(len(stripped), 120) / 120,
        sum(c.isalpha() for c in stripped) / n, sum(c.isdigit() for c in stripped) / n,
        stripped.count(" ") / n, sum(c in "()[]{}.,:;=+-*/<>%" for c in stripped) / n,
        sum(c.isupper() for c in stripped) / n,
        float(stripped.startswith("#")), float("#" in stripped),
        float(stripped[:1] in "\"'" and bool(stripped)), float('"""' in stripped or "'''" in stripped),
        float(stripped.endswith(":")), float(stripped.endswith((")", "(", ","))),
        float(" = " in stripped), float(stripped.startswith(KEYWORDS)), float(indent < previous_indent),
    ]
    return list(grams) + shape


def label_file(path: Path) -> pd.DataFrame | None:
    source = path.read_text(encoding="utf-8")
    try:
        tree = ast.parse(source)
        comments = comment_lines(source)
    except (SyntaxError, tokenize.TokenError, ValueError):
        return None
    docs = docstring_lines(tree)
    rows, previous_indent = [], 0
    for number, text in enumerate(source.splitlines(), start=1):
        if not text.strip():
            label = "blank"
        elif number in docs:
            label = "docstring"
        elif number in comments:
            label = "comment"
        else:
            label = "code"
        rows.append([path.name, number, label, text[:200], *line_features(text, previous_indent)])
        if text.strip():
            previous_indent = len(text) - len(text.lstrip(" "))
    columns = ["file", "line", "label", "text"] + [f"gram_{i}" for i in range(HASH_BUCKETS)] + SHAPE_FEATURES
    frame = pd.DataFrame(rows, columns=columns)
    float_columns = columns[4:]
    frame[float_columns] = frame[float_columns].astype(np.float32)
    return frame


def candidate_files() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in sorted(stdlib.glob("*.py")) if MIN_BYTES <= p.stat().st_size <= MAX_BYTES]
    return sorted(files, key=lambda p: zlib.crc32(p.name.encode()))


def main() -> None:
    data = Path(__file__).resolve().parent / "data"
    data.mkdir(exist_ok=True)
    frames: dict[str, list[pd.DataFrame]] = {"train": [], "holdout": []}
    for path in candidate_files():
        part = "holdout" if zlib.crc32(path.name.encode()) % 4 == 0 else "train"
        if len(frames[part]) >= (TRAIN_FILES if part == "train" else HOLDOUT_FILES):
            continue
        frame = label_file(path)
        if frame is not None:
            frames[part].append(frame)
    for part, name in (("train", "lines.parquet"), ("holdout", "lines-holdout.parquet")):
        table = pd.concat(frames[part], ignore_index=True)
        table.to_parquet(data / name, index=False)
        counts = table["label"].value_counts().to_dict()
        print(f"wrote {data / name}: {table['file'].nunique()} files, {len(table)} lines, {counts}")


if __name__ == "__main__":
    main()
