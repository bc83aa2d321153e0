"""Evidence reports: one report object per comparison, scan, lineage tree or behaviour probe,
rendered as a self-contained HTML file, Markdown or JSON.

``comparison_report`` / ``scan_report`` / ``tree_report`` / ``probe_report`` build a
``Report`` from a result;
``render`` draws it; ``write_report`` writes it atomically in the format its suffix names;
``load_report`` reads a JSON report back. Presentation only: nothing here runs a test.
"""

from forebear.report.behaviour import probe_report
from forebear.report.comparison import comparison_report
from forebear.report.files import load_report, report_format, write_report
from forebear.report.lineage import tree_report
from forebear.report.model import Report
from forebear.report.render import render
from forebear.report.scanning import scan_report

__all__ = [
    "Report",
    "comparison_report",
    "load_report",
    "probe_report",
    "render",
    "report_format",
    "scan_report",
    "tree_report",
    "write_report",
]
