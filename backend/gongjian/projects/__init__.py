"""The project list (项目清单): needs and resources turned into work, approved by a meeting."""
