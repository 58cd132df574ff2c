"""Dashboards: results (DataFrames) in, Plotly figures out."""
