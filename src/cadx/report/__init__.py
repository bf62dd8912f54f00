"""Reports: one self-contained HTML file and a Markdown twin from one or more run folders."""

from cadx.report.render import write_report
from cadx.report.runs import RunData, load_run

__all__ = ["RunData", "load_run", "write_report"]
