"""Entry point of a Hugging Face Space (Gradio SDK): rate a few photos, get a model of your taste.

The Space installs this package with its `app` extra (requirements.txt: `taskvec-aesthetics[app]`) and runs this file.
By default it serves the demo's base model, bank and photos, built on the first start; point it at your own with the
Space variables `TASKVEC_MODEL` and `TASKVEC_BANK` (Hub ids or folders) and `TASKVEC_PHOTOS` (a folder in the Space).
Locally, `taskvec-aesthetics app` does the same.
"""

import logging
import os

from taskvec_aesthetics.app import serve

if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    serve(
        model=os.environ.get("TASKVEC_MODEL"),
        bank=os.environ.get("TASKVEC_BANK"),
        photos=os.environ.get("TASKVEC_PHOTOS"),
        port=int(os.environ["PORT"]) if os.environ.get("PORT") else None,
    )
