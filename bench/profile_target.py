"""Run one benchmark workload outside pyperf, for profilers (scalene, py-spy).

    python bench/profile_target.py GROUP VARIANT [LOOPS]
    python -m scalene --cli bench/profile_target.py lru twin
"""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))

from bench.workloads import GROUPS  # noqa: E402


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    groups = {group.GROUP: group for group in GROUPS}
    group = groups.get(argv[0])
    if group is None or argv[1] not in group.VARIANTS:
        choices = ", ".join(f"{g.GROUP}: {'|'.join(g.VARIANTS)}" for g in GROUPS)
        print(f"unknown workload; choose from {choices}", file=sys.stderr)
        return 2
    loops = int(argv[2]) if len(argv) == 3 else 3
    seconds = group.VARIANTS[argv[1]](loops)
    print(f"{group.GROUP}/{argv[1]}: {loops} loops in {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
