"""Two-way evaluation (双向评议): rubrics, yearly windows per agreement, both sides' ratings."""
