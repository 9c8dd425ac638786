"""The providers that issue rewards, behind one small interface (app.fulfilment.providers.base)."""
