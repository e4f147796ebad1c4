"""Sphinx configuration of the stateopt documentation.

Build (warnings are errors):  python -m sphinx -W --keep-going -b html docs docs/_build/html

The tutorials are executed as notebooks (myst-nb), in their fast mode, by every build that reads
them: under a minute in all on two cores.
"""

import os
import sys

sys.path.insert(0, os.path.abspath('_ext'))

import stateopt  # noqa: E402

project = 'stateopt'
author = 'the stateopt authors'
copyright = '2026, the stateopt authors'
release = stateopt.__version__
version = '.'.join(release.split('.')[:2])

extensions = [
    'sphinx.ext.autodoc',
    'sphinx.ext.autosummary',
    'sphinx.ext.napoleon',
    'sphinx.ext.mathjax',
    'myst_nb',
    'schedule_gallery',
    'catalogue_table',
    'performance_table',
    'tutorial_pages',
]

exclude_patterns = ['_build', 'Thumbs.db', '.DS_Store']
myst_enable_extensions = ['colon_fence', 'dollarmath']
myst_heading_anchors = 3

# the tutorials' notebooks (see _ext/tutorial_pages.py): run each one when it is read, stop the build
# on an error, and show each cell's printed output as one block
nb_execution_mode = 'force'
nb_execution_timeout = 300
nb_execution_raise_on_error = True
nb_merge_streams = True

autosummary_generate = True
autodoc_member_order = 'bysource'
autodoc_typehints = 'none'
autodoc_default_options = {'members': True, 'show-inheritance': False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_ivar = True
templates_path = ['_templates']

html_theme = 'furo'
html_title = f'stateopt {release}'
html_static_path = ['_static']
html_css_files = ['stateopt.css']
