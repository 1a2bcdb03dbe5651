"""The JSON API under ``/api``: one blueprint per feature, each registered by
:func:`web.app.create_app`. Reference: docs/api.md and ``GET /api/openapi.json``
(web/openapi.py), which the tests check against these routes.

* :mod:`.searches` -- text, image and combined searches;
* :mod:`.items` -- an item's detail, deletion, thumbnail, file and similar images;
* :mod:`.indexing` -- starting an indexing job and following it;
* :mod:`.texts` -- adding and removing texts of the corpus;
* :mod:`.duplicates` -- duplicate groups of the library and "not duplicates" decisions;
* :mod:`.session` -- trading an API key for a browser session cookie;
* :mod:`.service` -- health and the OpenAPI document;
* :mod:`.common` -- the request helpers they all share.

Nothing is imported here: each feature module stands on its own.
"""
