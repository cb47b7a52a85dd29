"""The REST client handlers get: `client` (`B24`, `AsyncB24`) sends each call down the
`layers` (resend, relocate, authorize, operating window, limiter, echo marks, send) to the
`transport`."""
