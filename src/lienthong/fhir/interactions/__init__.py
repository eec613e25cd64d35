"""One module per FHIR interaction (https://hl7.org/fhir/R4/http.html).

Each public function takes the engine and plain arguments and returns a
:class:`~lienthong.fhir.engine.FhirResponse`; the ``*_in`` variants run inside
a caller's write session so transaction bundles can compose them.
"""
