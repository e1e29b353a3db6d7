"""The kernel's id of the current boot: two monotonic times compare only when it is the same.

``time.monotonic()`` counts from the boot and is shared by every process of it, so a source's
records can time a task an earlier run of the agent created (a crash) on that clock when both
runs saw one boot id; across a reboot only the wall clock remains.
"""

BOOT_ID_PATH = "/proc/sys/kernel/random/boot_id"  # Linux; absent elsewhere
BOOT_TAG_CHARS = 12  # 48 bits of the id: enough to tell boots apart, short in every journal line


def read_boot_id(path: str = BOOT_ID_PATH) -> str:
    """A short tag of the current boot's id, or "" when the system gives none."""
    try:
        with open(path, "rb") as f:
            text = f.read(64).decode("ascii", "replace")
    except OSError:
        return ""
    tag = text.strip().replace("-", "")[:BOOT_TAG_CHARS]
    return tag if len(tag) == BOOT_TAG_CHARS and all(c in "0123456789abcdef" for c in tag) else ""
