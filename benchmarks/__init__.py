"""Throughput, latency and memory of frappe_eda against raw pika, measured in the same run."""
