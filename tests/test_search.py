"""ScipyOptimizer against scipy itself: the same problem in float64 numpy, every method, both forms."""

import brainstate
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import stateopt
from stateopt.search._scipy import METHODS


#: A smooth problem with a unique minimum, w in R^2 and a scalar b.
def numpy_loss(x):
    w, b = x[:2], x[2]
    return np.sum((w - 1.0) ** 2) + 0.1 * np.sum(w ** 4) + (b - 2.0) ** 2 + 0.5 * w[0] * b


def numpy_grad(x):
    w, b = x[:2], x[2]
    g = 2 * (w - 1.0) + 0.4 * w ** 3
    g[0] += 0.5 * b
    return np.append(g, 2 * (b - 2.0) + 0.5 * w[0])


REFERENCE = scipy.optimize.minimize(numpy_loss, np.zeros(3), jac=numpy_grad, method='BFGS', tol=1e-12).x


def _jax_loss(w, b):
    return jnp.sum((w - 1.0) ** 2) + 0.1 * jnp.sum(w ** 4) + (b - 2.0) ** 2 + 0.5 * w[0] * b


@pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::RuntimeWarning')
@pytest.mark.parametrize('method', METHODS)
def test_every_method_over_states_reaches_scipys_optimum(method):
    w = brainstate.ParamState(jnp.array([3.0, -1.0]))
    b = brainstate.ParamState(jnp.array(0.5))
    opt = stateopt.ScipyOptimizer(lambda: _jax_loss(w.value, b.value), method=method)
    result = opt.register_trainable_weights({'w': w, 'b': b}).minimize()
    # float32 optimum: the loss is flat to 1e-7 within ~3e-4 of it (sqrt of float32's eps)
    np.testing.assert_allclose(np.append(np.asarray(w.value), b.value), REFERENCE, atol=2e-3)
    assert w.value.dtype == jnp.float32 and b.value.dtype == jnp.float32
    assert set(result.x) == {'w', 'b'} and np.isfinite(result.fun)


@pytest.mark.filterwarnings('ignore::UserWarning', 'ignore::RuntimeWarning')
@pytest.mark.parametrize('method', ['L-BFGS-B', 'TNC', 'SLSQP', 'Powell', 'Nelder-Mead', 'trust-constr'])
@pytest.mark.parametrize('form', ['list', 'dict'])
def test_the_box_form_reaches_scipys_optimum(method, form):
    np.random.seed(0)
    box = [(-jnp.full(2, 3.0), jnp.full(2, 3.0)), (0.0, 3.0)]
    if form == 'list':
        opt = stateopt.ScipyOptimizer(_jax_loss, bounds=box, method=method)
    else:
        opt = stateopt.ScipyOptimizer(lambda w, b: _jax_loss(w, b), bounds=dict(zip('wb', box)),
                                      method=method)
    result = opt.minimize(n_iter=2)
    x = result.x if form == 'list' else (result.x['w'], result.x['b'])
    assert isinstance(result.x, tuple if form == 'list' else dict)
    np.testing.assert_allclose(np.append(np.asarray(x[0]), x[1]), REFERENCE, atol=2e-3)


def test_bounds_over_states_are_honoured_and_maxiter_is_passed():
    w = brainstate.ParamState(jnp.array([0.0, 0.0]))
    b = brainstate.ParamState(jnp.array(0.0))
    opt = stateopt.ScipyOptimizer(lambda: _jax_loss(w.value, b.value), method='L-BFGS-B',
                                  bounds={'b': (0.0, 1.0)})
    opt.register_trainable_weights({'w': w, 'b': b}).minimize()
    # scipy on the same box in float64
    want = scipy.optimize.minimize(numpy_loss, np.zeros(3), jac=numpy_grad, method='L-BFGS-B',
                                   bounds=[(None, None)] * 2 + [(0.0, 1.0)]).x
    np.testing.assert_allclose(np.append(np.asarray(w.value), b.value), want, atol=2e-3)
    assert float(b.value) == pytest.approx(1.0)
    w.value, b.value = jnp.array([3.0, -1.0]), jnp.array(0.5)
    one = stateopt.ScipyOptimizer(lambda: _jax_loss(w.value, b.value), method='BFGS', options={'maxiter': 1})
    assert one.register_trainable_weights({'w': w, 'b': b}).minimize().nit == 1


def test_bad_input_is_refused_and_the_states_keep_their_values():
    w = brainstate.ParamState(jnp.array([3.0, -1.0]))
    with pytest.raises(ValueError, match='not a method of scipy.optimize.minimize'):
        stateopt.ScipyOptimizer(lambda: jnp.sum(w.value), method='adam')
    with pytest.raises(ValueError, match=r'bounds\[0\]: min and max must have one shape'):
        stateopt.ScipyOptimizer(lambda x: x, bounds=[(jnp.zeros(2), jnp.ones(1))])
    with pytest.raises(ValueError, match=r"bounds\['x'\] must be finite with min <= max"):
        stateopt.ScipyOptimizer(lambda x: x, bounds={'x': (1.0, 0.0)})
    with pytest.raises(ValueError, match='nothing to search over'):
        stateopt.ScipyOptimizer(lambda: 0.0).minimize()
    opt = stateopt.ScipyOptimizer(lambda: jnp.sum(w.value ** 2), bounds={'v': (0.0, 1.0)})
    with pytest.raises(ValueError, match=r"bounds names \['v'\]"):
        opt.register_trainable_weights({'w': w}).minimize()

    def stop(params):
        raise RuntimeError('stopped by the callback')

    w.value = jnp.array([1.0, 1.0])
    opt = stateopt.ScipyOptimizer(lambda: jnp.sum((w.value - 3.0) ** 2), method='BFGS', callback=stop)
    with pytest.raises(RuntimeError, match='stopped by the callback'):
        opt.register_trainable_weights({'w': w}).minimize()
    np.testing.assert_array_equal(w.value, [1.0, 1.0])
    with pytest.raises(NotImplementedError, match='minimize'):
        stateopt.ScipyOptimizer(lambda: 0.0).update({})


def test_brainunit_bounds_are_converted_to_the_first_unit():
    u = pytest.importorskip('brainunit')
    np.random.seed(1)
    opt = stateopt.ScipyOptimizer(lambda x: (x - 500.0) ** 2, bounds=[(-1.0 * u.mV, 0.001 * u.volt)],
                                  method='Powell')
    # 0.001 V = 1 mV: the optimum 500 is outside [-1, 1], so the search ends at the bound 1
    assert float(opt.minimize().x[0]) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(Exception, match='unit|dimension'):
        stateopt.ScipyOptimizer(lambda x: x, bounds=[(1.0 * u.mV, 1.0 * u.nA)])


# -- NevergradOptimizer: problems with a known optimum ---------------------------------------

@pytest.mark.parametrize('form', ['list', 'dict'])
def test_nevergrad_box_search_finds_the_known_optimum_with_batched_candidates(form):
    pytest.importorskip('nevergrad')
    shapes = []

    def loss(x, y):
        shapes.append((np.shape(x), np.shape(y)))
        return jnp.sum((x - jnp.array([0.5, -1.0])) ** 2, axis=-1) + (y - 2.0) ** 2

    box = [(-jnp.full(2, 3.0), jnp.full(2, 3.0)), (0.0, 3.0)]
    if form == 'list':
        opt = stateopt.NevergradOptimizer(loss, box, n_sample=12, method='DE', seed=0)
    else:
        opt = stateopt.NevergradOptimizer(lambda **p: loss(p['x'], p['y']), dict(zip('xy', box)), n_sample=12,
                                          method='DE', seed=0)
    best = opt.minimize(n_iter=40, verbose=False)
    x, y = best if form == 'list' else (best['x'], best['y'])
    assert shapes[0] == ((12, 2), (12,))                  # one batched call per round
    np.testing.assert_allclose(np.append(np.asarray(x), y), [0.5, -1.0, 2.0], atol=0.15)
    assert len(opt.candidates) == 40 * 12 and opt.errors.shape == (480,)
    assert float(opt.errors.min()) == pytest.approx(float(loss(x[None], jnp.asarray(y)[None])[0]), rel=1e-5)


def test_nevergrad_over_states_leaves_the_best_candidate_in_them():
    pytest.importorskip('nevergrad')
    w = brainstate.ParamState(jnp.zeros(2))
    opt = stateopt.NevergradOptimizer(lambda: jnp.sum((w.value - jnp.array([0.3, -0.6])) ** 2),
                                      {'w': (-np.ones(2), np.ones(2))}, n_sample=16, seed=0)
    best = opt.register_trainable_weights({'w': w}).minimize(n_iter=30, verbose=False)
    np.testing.assert_allclose(w.value, [0.3, -0.6], atol=0.05)
    np.testing.assert_array_equal(best['w'], w.value)
    assert w.value.dtype == jnp.float32

    def failing():
        raise RuntimeError('model blew up')

    w.value = jnp.array([0.1, 0.2])
    bad = stateopt.NevergradOptimizer(failing, {'w': (-np.ones(2), np.ones(2))}, n_sample=4)
    with pytest.raises(RuntimeError, match='blew up'):
        bad.register_trainable_weights({'w': w}).minimize(verbose=False)
    np.testing.assert_array_equal(w.value, np.float32([0.1, 0.2]))   # the values it had, untouched


def test_nevergrad_refuses_bad_input_with_the_reason():
    pytest.importorskip('nevergrad')
    loss = lambda x: x ** 2   # noqa: E731
    with pytest.raises(ValueError, match='n_sample'):
        stateopt.NevergradOptimizer(loss, [(0.0, 1.0)], n_sample=0)
    with pytest.raises(ValueError, match='not a nevergrad optimizer'):
        stateopt.NevergradOptimizer(loss, [(0.0, 1.0)], n_sample=2, method='adam')
    with pytest.raises(ValueError, match='one shape'):
        stateopt.NevergradOptimizer(loss, [(jnp.zeros(2), jnp.ones(1))], n_sample=2)
    with pytest.raises(ValueError, match='callable'):
        stateopt.NevergradOptimizer(3.0, [(0.0, 1.0)], n_sample=2)
    opt = stateopt.NevergradOptimizer(loss, [(0.0, 1.0)], n_sample=2)
    with pytest.raises(ValueError, match='n_iter'):
        opt.minimize(n_iter=0)
    wrong = stateopt.NevergradOptimizer(lambda x: jnp.sum(x), [(0.0, 1.0)], n_sample=3)
    with pytest.raises(ValueError, match='one loss per candidate'):
        wrong.minimize(verbose=False)
    with pytest.warns(RuntimeWarning, match='more than budget=4'):
        over = stateopt.NevergradOptimizer(loss, [(0.0, 1.0)], n_sample=3, budget=4)
        over.minimize(n_iter=2, verbose=False)
    nan = stateopt.NevergradOptimizer(lambda x: x * jnp.nan, [(0.0, 1.0)], n_sample=3, seed=0)
    with pytest.warns(RuntimeWarning, match='NaN'):
        (value,) = nan.minimize(n_iter=2, verbose=False)
    assert 0.0 <= float(value) <= 1.0
