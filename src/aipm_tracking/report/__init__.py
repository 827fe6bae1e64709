"""Renderers: comparison -> table (terminal), markdown, json, junit, html."""
