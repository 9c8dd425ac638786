"""Local stand-ins for the fulfilment providers: real HTTP servers on loopback, each answering
the documented shapes of the calls the service makes (and recording them for assertions)."""
