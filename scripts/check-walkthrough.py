"""Checks that every file and symbol docs/walkthrough.md links to still exists.

Every relative Markdown link must point at an existing file or directory.
When the link text holds code in backticks, each code span names what the
linked file must contain:

    [`fn query`](../api-gateway/src/routes/note.rs)       a `fn query`
    [`struct AuthUser`](…)  [`enum ApiError`](…)           that item (also trait,
    [`trait Registry`](…)   [`const EJECT_FOR`](…)          type, static, mod)
    [`macro on_pool`](…)                                   `macro_rules! on_pool`
    [`Upstream::call_idempotent`](…)                       a `fn call_idempotent`
                                                           inside an `impl … Upstream`
                                                           (or `trait Upstream`) block
    [`impl From<NoteError> for Status`](…)                 that exact text
    [`QueryNote`](…), [`TCP_NODELAY`](…)                   that exact text

A reference that no longer holds is reported with the line, the link and
what is missing, so that after a move or a rename the fix is to point the
link at the new place. Also checks every other document given.

A link that names code carries a line anchor (`…/note.rs#L120`) to where
its first code span is defined, so that a reader lands on it. Anchors are
generated, not written: `--fix` rewrites them after the code moved, and
a check reports every anchor that no longer points at its code.

usage: scripts/py scripts/check-walkthrough.py [DOC ...]     (default: docs/walkthrough.md)
       scripts/check-walkthrough.py --fix [DOC ...]
       scripts/check-walkthrough.py --self-test
Standard library only.
"""

import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DOCS = ["docs/walkthrough.md"]

LINK = re.compile(r"\[((?:[^\[\]]|`[^`]*`)+)\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`]+)`")
ITEM_KINDS = ("fn", "struct", "enum", "trait", "type", "const", "static", "mod")


def strip_code_blocks(text):
    """The document with fenced code blocks blanked (line numbers kept)."""
    out, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            out.append("")
        else:
            out.append("" if fenced else line)
    return out


def symbol_line(symbol, source):
    """The 1-based line where `symbol` is defined in `source` (or, for plain
    text, first appears), or None."""
    words = symbol.split()
    if len(words) == 2 and words[0] in ITEM_KINDS + ("macro",):
        kind, name = words
        pattern = {"fn": rf"\bfn\s+{re.escape(name)}\s*[<(]",
                   "macro": rf"macro_rules!\s+{re.escape(name)}\b"}.get(kind, rf"\b{kind}\s+{re.escape(name)}\b")
        found = re.search(pattern, source)
        position = found.start() if found else None
    else:
        path = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)::([a-z_][a-z0-9_]*)", symbol)
        if path:
            owner, method = path.groups()
            method_fn = re.compile(rf"\bfn\s+{re.escape(method)}\s*[<(]")
            position = next((start + found.start() for start, body in impl_bodies(source, owner)
                             for found in [method_fn.search(body)] if found), None)
        else:
            position = source.find(symbol)
            position = None if position < 0 else position
    return None if position is None else source.count("\n", 0, position) + 1


def symbol_problem(symbol, source):
    """Why `symbol` is not in `source`, or None when it is."""
    if symbol_line(symbol, source) is not None:
        return None
    words = symbol.split()
    if len(words) == 2 and words[0] in ITEM_KINDS:
        return f"no `{symbol}`"
    if len(words) == 2 and words[0] == "macro":
        return f"no `macro_rules! {words[1]}`"
    path = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)::([a-z_][a-z0-9_]*)", symbol)
    if path:
        return f"no `fn {path.group(2)}` in an `impl` of `{path.group(1)}`"
    return f"no `{symbol}`"


def impl_bodies(source, owner):
    """(start, body) of `source`'s `impl` blocks naming `owner` (`impl Owner`,
    `impl<T> Trait for Owner<T>`, …) and of `trait Owner`, found by
    matching braces."""
    header = re.compile(rf"(?m)^[ \t]*(?:pub(?:\([^)]*\))?\s+)?(?:impl\b[^{{;]*\b|trait\s+)"
                        rf"{re.escape(owner)}\b[^{{;]*\{{")
    for match in header.finditer(source):
        start, depth = match.end() - 1, 0
        for end in range(start, len(source)):
            if source[end] == "{":
                depth += 1
            elif source[end] == "}":
                depth -= 1
                if depth == 0:
                    yield start, source[start:end + 1]
                    break


def check(doc_path, fix=False):
    """Problems of one document: (line, message). With `fix`, line anchors
    that are missing or moved are rewritten instead of reported."""
    problems = []
    doc_dir = os.path.dirname(os.path.join(ROOT, doc_path))
    text = open(os.path.join(ROOT, doc_path), encoding="utf-8").read()
    lines = text.split("\n")
    links = 0
    for number, line in enumerate(strip_code_blocks(text), start=1):
        for match in LINK.finditer(line):
            label, target = match.groups()
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # a URL, or an anchor in this page
            links += 1
            file_part, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(doc_dir, file_part))
            shown = os.path.relpath(path, ROOT)
            if not os.path.exists(path):
                problems.append((number, f"[{label}]({target}): {shown} does not exist"))
                continue
            symbols = CODE.findall(label)
            if not symbols:
                continue
            if os.path.isdir(path):
                problems.append((number, f"[{label}]({target}): names code but links to a "
                                         f"directory; link the file that defines it"))
                continue
            source = open(path, encoding="utf-8", errors="replace").read()
            whys = [why for why in (symbol_problem(symbol, source) for symbol in symbols) if why]
            for why in whys:
                problems.append((number, f"[{label}]({target}): {why} in {shown}"))
            at = symbol_line(symbols[0], source)
            if whys or at is None or anchor == f"L{at}":
                continue
            if fix:
                lines[number - 1] = lines[number - 1].replace(
                    f"]({target})", f"]({file_part}#L{at})", 1)
            else:
                problems.append((number, f"[{label}]({target}): {symbols[0]} is at line {at} of {shown}, "
                                         f"the link says {('#' + anchor) if anchor else 'no line'}"))
    if links == 0:
        problems.append((0, "no relative links at all: is this the right document?"))
    if fix:
        fixed = "\n".join(lines)
        if fixed != text:
            open(os.path.join(ROOT, doc_path), "w", encoding="utf-8").write(fixed)
    return problems


def self_test():
    """Each kind of reference passes when it holds and fails when it does not."""
    source = (
        "pub struct Upstream;\nimpl Upstream {\n    pub async fn call_idempotent<T>() {}\n}\n"
        "const EJECT_FOR: u8 = 5;\nmacro_rules! on_pool { () => {} }\n"
        "impl From<NoteError> for Status {}\nfn query(x: u8) {}\n"
    )
    holds = ["fn query", "struct Upstream", "const EJECT_FOR", "macro on_pool",
             "Upstream::call_idempotent", "impl From<NoteError> for Status"]
    breaks = ["fn query_all", "struct Downstream", "enum Upstream", "macro off_pool",
              "Upstream::call", "Gateway::call_idempotent", "Upstream::query",
              "impl From<UserError> for Status"]
    failures = [f"{s!r} should be found" for s in holds if symbol_problem(s, source)]
    failures += [f"{s!r} should be missing" for s in breaks if not symbol_problem(s, source)]
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        code = os.path.join(tmp, "code.rs")
        open(code, "w", encoding="utf-8").write(source)
        doc = os.path.join(tmp, "doc.md")
        open(doc, "w", encoding="utf-8").write(
            "[`Upstream::call_idempotent`](code.rs) and [`fn query`](code.rs)\n"
            "[gone](missing.rs) and [`fn gone`](code.rs) and [`fn query`](.)\n"
            "```\n[`fn ignored`](nowhere.rs)\n```\n[web](https://example.com)\n")
        found = check(os.path.relpath(doc, ROOT))
        expected = ["missing.rs does not exist", "no `fn gone`", "links to a directory",
                    "Upstream::call_idempotent is at line 3", "fn query is at line 8"]
        for phrase in expected:
            if not any(phrase in message for _, message in found):
                failures.append(f"a document check should report {phrase!r}; got {found}")
        if len(found) != len(expected):
            failures.append(f"expected exactly {len(expected)} problems, got {found}")
        # --fix writes the anchors; then only the broken references remain.
        check(os.path.relpath(doc, ROOT), fix=True)
        fixed = open(doc, encoding="utf-8").read()
        for anchored in ("(code.rs#L3)", "(code.rs#L8)"):
            if anchored not in fixed:
                failures.append(f"--fix should write {anchored}; got {fixed!r}")
        if len(check(os.path.relpath(doc, ROOT))) != 3:
            failures.append("after --fix only the three broken references should remain")
    if failures:
        print("check-walkthrough self-test FAILED:", *failures, sep="\n  ", file=sys.stderr)
        return 1
    print("check-walkthrough self-test: every kind of reference is checked")
    return 0


def main(argv):
    if argv == ["--self-test"]:
        return self_test()
    fix = argv[:1] == ["--fix"]
    docs = argv[1:] if fix else argv
    docs = docs or DEFAULT_DOCS
    failed = False
    for doc in docs:
        problems = check(doc, fix)
        for number, message in problems:
            print(f"{doc}:{number}: {message}", file=sys.stderr)
        if problems:
            failed = True
        else:
            print(f"{doc}: every linked file and symbol exists")
    if failed:
        print("Update the links above to where the code lives now (or the code, if it was "
              "renamed by mistake); line anchors are rewritten by "
              "scripts/check-walkthrough.py --fix.", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
