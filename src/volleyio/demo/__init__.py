"""The demo served by ``python -m volleyio``: a chat room with live counters, and a CLI client."""
