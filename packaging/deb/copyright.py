"""Debian's machine-readable copyright file for the .deb: ttpsensor, then every bundled
distribution in the private site-packages with the license its own metadata declares."""

from __future__ import annotations

import sys
from email.parser import HeaderParser
from pathlib import Path

HEAD = """\
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: ttpsensor
Comment: The Python distributions below are bundled, unmodified, from their wheels on PyPI
 into /usr/lib/ttpsensor/site-packages; each one's full license text is in its .dist-info
 directory there.

Files: *
Copyright: 2026 ttpsensor developers
License: Apache-2.0
"""

APACHE = """
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0.
"""


def bundled(site: Path) -> list[tuple[str, str, str, str]]:
    found = []
    for metadata in sorted(site.glob("*.dist-info/METADATA")):
        headers = HeaderParser().parsestr(metadata.read_text(errors="replace"))
        license_name = (headers.get("License-Expression") or headers.get("License") or "")
        if not license_name or len(license_name) > 80 or "\n" in license_name:
            classifiers = [c.split("::")[-1].strip() for c in headers.get_all("Classifier", [])
                           if c.startswith("License ::")]
            license_name = ", ".join(classifiers) or "see its dist-info"
        found.append((headers["Name"], headers["Version"], license_name,
                      metadata.parent.name))
    return found


def main(site: str) -> None:
    out = [HEAD]
    for name, version, license_name, info in bundled(Path(site)):
        out.append(f"\nFiles: usr/lib/ttpsensor/site-packages/{info}/*\n"
                   f"Copyright: the authors of {name} {version}\n"
                   f"License: {license_name}\n"
                   f" The full text is in usr/lib/ttpsensor/site-packages/{info}.\n")
    out.append(APACHE)
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
