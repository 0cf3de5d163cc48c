// The reference server's whole flow, driven by openid-client (a certified OpenID Connect
// relying-party library from the npm registry, that nobody here wrote). Run by
// `.ci/openid-client-flow`, which installs the package and starts the server; the server's
// base URL comes as the first argument. Exits non-zero, with a message, on the first failure.
import * as client from 'openid-client';
// openid-client's own JOSE dependency, for one proof made by hand (step 10).
import * as jose from 'jose';

const base = process.argv[2];
const redirectUri = process.argv[3];
const nonces = process.argv[4] === '--dpop-nonces';
const fail = (why) => { console.error(`openid-client flow: ${why}`); process.exit(1); };
const expect = (ok, why) => { if (!ok) fail(why); };

// RFC 8414 discovery ('oauth2': /.well-known/oauth-authorization-server), over loopback HTTP.
const config = await client.discovery(
  new URL(base), 'demo-client', 'demo-secret', client.ClientSecretBasic('demo-secret'),
  { algorithm: 'oauth2', execute: [client.allowInsecureRequests] },
);

async function login(options) {
  const verifier = client.randomPKCECodeVerifier();
  const challenge = await client.calculatePKCECodeChallenge(verifier);
  const state = client.randomState();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: redirectUri, scope: 'profile',
    code_challenge: challenge, code_challenge_method: 'S256', state,
  });
  // Consent is auto-approved: the authorization endpoint redirects at once.
  const r = await fetch(url, { redirect: 'manual' });
  expect(r.status >= 300 && r.status < 400, `authorize answered ${r.status}`);
  const callback = new URL(r.headers.get('location'));
  return client.authorizationCodeGrant(config, callback, {
    pkceCodeVerifier: verifier, expectedState: state,
  }, undefined, options);
}

async function rejected(promise, code) {
  try { await promise; } catch (e) {
    if (process.env.FLOW_DEBUG) console.error(e);
    return e.error === code || e.code === code || String(e).includes(code);
  }
  return false;
}

// 1. Code + PKCE → tokens.
const tokens = await login();
expect(tokens.access_token && tokens.refresh_token, 'no tokens from the code grant');
expect(tokens.token_type.toLowerCase() === 'bearer', `token_type ${tokens.token_type}`);
// 2. The resource.
const resource = new URL('/resource', base);
let r = await client.fetchProtectedResource(config, tokens.access_token, resource, 'GET');
expect(r.status === 200, `resource answered ${r.status}`);
expect((await r.json()).sub === 'demo-user', 'resource: wrong sub');
// 3. Refresh.
const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
expect(refreshed.refresh_token && refreshed.refresh_token !== tokens.refresh_token, 'no new refresh token');
// 4. The old refresh token again: invalid_grant, and the new one is dead too.
expect(await rejected(client.refreshTokenGrant(config, tokens.refresh_token), 'invalid_grant'), 'reuse was not invalid_grant');
expect(await rejected(client.refreshTokenGrant(config, refreshed.refresh_token), 'invalid_grant'), 'the new refresh token survived reuse');
// 5. A second login, revoked; 6. introspection says inactive.
const second = await login();
let info = await client.tokenIntrospection(config, second.access_token);
expect(info.active === true, 'a fresh access token introspected inactive');
await client.tokenRevocation(config, second.refresh_token, { token_type_hint: 'refresh_token' });
info = await client.tokenIntrospection(config, second.access_token);
expect(info.active === false, 'introspection after revocation said active');
console.log('openid-client flow: ok (code + PKCE, resource, refresh, reuse, revoke, introspect)');

// 7. DPoP (RFC 9449), with openid-client's own DPoP support: the client holds a key pair and
// signs a proof for each request; the server binds the login to the key.
for (const alg of ['ES256', 'EdDSA']) {
  const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair(alg));
  const bound = await login({ DPoP });
  expect(bound.token_type.toLowerCase() === 'dpop', `${alg}: token_type ${bound.token_type}`);
  r = await client.fetchProtectedResource(config, bound.access_token, resource, 'GET', undefined, undefined, { DPoP });
  expect(r.status === 200, `${alg}: the resource with a proof answered ${r.status}`);
  // The access token without the key (as a bearer token): refused.
  r = await fetch(resource, { headers: { authorization: `Bearer ${bound.access_token}` } });
  expect(r.status === 401, `${alg}: the bound access token as a bearer token answered ${r.status}`);
  info = await client.tokenIntrospection(config, bound.access_token);
  expect(info.active === true && info.token_type === 'DPoP' && typeof info.cnf?.jkt === 'string',
    `${alg}: introspection of a bound token: ${JSON.stringify(info)}`);
  // The key's holder refreshes: a new DPoP-bound pair.
  const next = await client.refreshTokenGrant(config, bound.refresh_token, undefined, { DPoP });
  expect(next.token_type.toLowerCase() === 'dpop' && next.refresh_token !== bound.refresh_token,
    `${alg}: the DPoP refresh`);
  r = await client.fetchProtectedResource(config, next.access_token, resource, 'GET', undefined, undefined, { DPoP });
  expect(r.status === 200, `${alg}: the refreshed token with a proof answered ${r.status}`);
  // 8. Theft: the current refresh token, stolen, used with the thief's own key: invalid_grant,
  // and the family is dead — the owner's next refresh fails and its access token is inactive.
  const thief = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
  expect(await rejected(client.refreshTokenGrant(config, next.refresh_token, undefined, { DPoP: thief }), 'invalid_grant'),
    `${alg}: the stolen refresh token with another key was not invalid_grant`);
  expect(await rejected(client.refreshTokenGrant(config, next.refresh_token, undefined, { DPoP }), 'invalid_grant'),
    `${alg}: the family survived the theft`);
  info = await client.tokenIntrospection(config, next.access_token);
  expect(info.active === false, `${alg}: the access token survived the theft`);
}
// 9. Theft without any proof at all: the same.
{
  const DPoP = client.getDPoPHandle(config, await client.randomDPoPKeyPair('ES256'));
  const bound = await login({ DPoP });
  expect(await rejected(client.refreshTokenGrant(config, bound.refresh_token), 'invalid_grant'),
    'the stolen refresh token without a proof was not invalid_grant');
  expect(await rejected(client.refreshTokenGrant(config, bound.refresh_token, undefined, { DPoP }), 'invalid_grant'),
    'the family survived a refresh without a proof');
  info = await client.tokenIntrospection(config, bound.access_token);
  expect(info.active === false, 'the access token survived a refresh without a proof');
}
// 10. A proof made by hand without a nonce: refused with use_dpop_nonce (and a DPoP-Nonce to
// retry with) by a server that requires nonces, which openid-client did above on its own.
{
  const { privateKey, publicKey } = await jose.generateKeyPair('ES256');
  const proof = await new jose.SignJWT({ htm: 'POST', htu: new URL('/token', base).href, jti: client.randomState() })
    .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: await jose.exportJWK(publicKey) })
    .setIssuedAt()
    .sign(privateKey);
  r = await fetch(new URL('/token', base), {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: `Basic ${Buffer.from('demo-client:demo-secret').toString('base64')}`,
      dpop: proof,
    },
    body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: 'tdb_rt_x' }),
  });
  const error = (await r.json()).error;
  if (nonces) {
    expect(r.status === 400 && error === 'use_dpop_nonce' && r.headers.get('dpop-nonce'),
      `a proof without a nonce: ${r.status} ${error}`);
  } else {
    expect(r.status === 400 && error === 'invalid_grant', `a proof without a nonce, none required: ${r.status} ${error}`);
  }
}
console.log(`openid-client flow: ok (DPoP with ES256 and EdDSA: bound code grant, resource with proof, bearer use refused, refresh, theft with another key and without one refused and the family revoked${nonces ? ', server nonces demanded and followed' : ''})`);
