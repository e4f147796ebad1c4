"""The public API only grows: every name and signature in fixtures/public_api.json still holds."""

import inspect
import json
import pathlib
import re

import stateopt
from stateopt import functional

FIXTURE = pathlib.Path(__file__).parent / 'fixtures' / 'public_api.json'


def _signature(obj) -> str | None:
    """Parameter names, kinds and defaults (annotations and object addresses left out)."""
    try:
        signature = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    parameters = [p.replace(annotation=p.empty) for p in signature.parameters.values()]
    bare = signature.replace(parameters=parameters, return_annotation=signature.empty)
    return re.sub(r' at 0x[0-9a-f]+', '', str(bare))


def _members(cls) -> dict:
    """Public methods and properties of a class, with their signatures."""
    members = {}
    for name in dir(cls):
        if name.startswith('_') and name not in ('__call__', '__init__'):
            continue
        attr = inspect.getattr_static(cls, name)
        if isinstance(attr, property):
            members[name] = 'property'
        elif callable(attr) or isinstance(attr, (staticmethod, classmethod)):
            members[name] = _signature(getattr(cls, name))
    return members


def public_api() -> dict:
    """``{qualified name: signature or members}`` of stateopt and stateopt.functional."""
    api = {}
    for module, names in ((stateopt, stateopt.__all__), (functional, functional.__all__)):
        for name in names:
            obj = getattr(module, name)
            key = f'{module.__name__}.{name}'
            if inspect.isclass(obj):
                api[key] = {'signature': _signature(obj), 'members': _members(obj)}
            elif callable(obj):
                api[key] = {'signature': _signature(obj)}
            elif inspect.ismodule(obj):
                api[key] = {'module': obj.__name__}
            else:
                api[key] = {'value': sorted(obj) if isinstance(obj, (list, tuple, dict)) else repr(obj)}
    return api


def test_the_public_api_keeps_every_name_and_signature():
    committed = json.loads(FIXTURE.read_text())
    now = public_api()
    missing = sorted(set(committed) - set(now))
    assert not missing, f'public names removed: {missing}'
    changed = []
    for key, was in committed.items():
        is_ = now[key]
        for field in ('signature', 'module'):
            if was.get(field) != is_.get(field):
                changed.append(f'{key} {field}: {was.get(field)} -> {is_.get(field)}')
        if 'value' in was and not set(was['value']) <= set(is_.get('value', ())):
            changed.append(f'{key}: lost {sorted(set(was["value"]) - set(is_.get("value", ())))}')
        for member, signature in was.get('members', {}).items():
            if member not in is_.get('members', {}):
                changed.append(f'{key}.{member} removed')
            elif is_['members'][member] != signature:
                changed.append(f'{key}.{member}: {signature} -> {is_["members"][member]}')
    assert not changed, '\n'.join(changed)
