"""An import-linter contract that is an allow-list: the modules of ``source_modules`` may import only what
``allowed_modules`` names (and themselves). A deny-list forgets the next I/O library; an allow-list does not."""

from __future__ import annotations

from typing import Any

from importlinter import Contract, ContractCheck, fields, output

__all__ = ["AllowListContract"]


class AllowListContract(Contract):
    source_modules = fields.ListField(subfield=fields.StringField())
    allowed_modules = fields.ListField(subfield=fields.StringField())

    def check(self, graph: Any, verbose: bool) -> ContractCheck:
        sources = [str(m) for m in self.source_modules]  # type: ignore[attr-defined]
        allowed = [str(m) for m in self.allowed_modules]  # type: ignore[attr-defined]

        def inside(module: str, roots: list[str]) -> bool:
            return any(module == root or module.startswith(root + ".") for root in roots)

        found = []
        for module in sorted(graph.modules):
            if not inside(module, sources):
                continue
            for imported in sorted(graph.find_modules_directly_imported_by(module)):
                if not inside(imported, sources + allowed):
                    details = graph.get_import_details(importer=module, imported=imported)
                    lines = sorted({d["line_number"] for d in details})
                    found.append({"importer": module, "imported": imported, "lines": lines})
        return ContractCheck(kept=not found, warnings=None, metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        for item in check.metadata["found"]:
            lines = ", ".join(f"l.{n}" for n in item["lines"]) or "?"
            output.print_error(f"{item['importer']} imports {item['imported']} ({lines}), which is not allowed")
            output.new_line()
