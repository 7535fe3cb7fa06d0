"""Entry point of a Hugging Face Space (Gradio SDK): rate a few photos, get a model of your taste.

The Space installs this package with its `app` extra (requirements.txt: `taskvec-aesthetics[app]`) and runs this file.
Set the Space variables to Hub ids, and it loads everything from the Hub and starts in seconds:

    TASKVEC_MODEL   the base model          (e.g. your-name/taskvec-aesthetics-demo-base)
    TASKVEC_BANK    the task-vector bank     (e.g. your-name/taskvec-aesthetics-demo-bank)
    TASKVEC_PHOTOS  a repo of photos to rate (e.g. your-name/taskvec-aesthetics-demo-photos)

`taskvec-aesthetics app --push-demo your-name` pushes the demo's three and prints these lines. Folders work too. With
none set it serves the demo's, built on the first start (minutes on a CPU). Locally, `taskvec-aesthetics app` does
the same.
"""

import logging
import os

from taskvec_aesthetics.app import serve

if __name__ == "__main__":
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    serve(
        model=os.environ.get("TASKVEC_MODEL") or None,
        bank=os.environ.get("TASKVEC_BANK") or None,
        photos=os.environ.get("TASKVEC_PHOTOS") or None,
        port=int(os.environ["PORT"]) if os.environ.get("PORT") else None,
    )
