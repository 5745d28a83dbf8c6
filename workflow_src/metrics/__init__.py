"""Sensitivity indicators measured on a trained network (Novak et al. 2018 §3)."""
