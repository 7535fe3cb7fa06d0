"""The offline embedded default: real photos, simulated databases and raters, end to end."""
