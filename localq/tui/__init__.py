"""Textual terminal UI for the label / fit / re-query loop (``localq train``).

Importing this package loads nothing heavy; ``localq.tui.app`` imports Textual.
"""
