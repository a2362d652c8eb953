"""Configurations of mt-repro's own demos (package data); the paper's are in original_configs."""
