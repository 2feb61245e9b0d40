"""logstore: Apache Kafka's storage layer as an embeddable Python library."""

__version__ = "0.1.0"
