"""Credentials: pure parsing of arguments and environment (no Swift needed)."""

from zodb_swiftblobs.swift import Credentials

SECRET = "s3cr3t-Value"


def test_tempauth_from_st_variables():
    creds = Credentials.from_environ({
        "ST_AUTH": "http://swift:8080/auth/v1.0", "ST_USER": "acct:user", "ST_KEY": SECRET})
    assert (creds.auth_url, creds.user, creds.key) == (
        "http://swift:8080/auth/v1.0", "acct:user", SECRET)
    assert not creds.keystone
    assert creds.can_authenticate
    args, kwargs = creds.auth_arguments()
    assert args == ("http://swift:8080/auth/v1.0", "acct:user", SECRET)
    assert kwargs == {"auth_version": "1.0"}


def test_st_variables_win_over_os_variables():
    creds = Credentials.from_environ({
        "ST_AUTH": "http://a/auth/v1.0", "ST_USER": "u", "ST_KEY": "k",
        "OS_AUTH_URL": "http://keystone/v3", "OS_USERNAME": "other", "OS_PASSWORD": "p"})
    assert creds.auth_url == "http://a/auth/v1.0" and creds.user == "u"


def test_keystone_password_from_os_variables():
    creds = Credentials.from_environ({
        "OS_AUTH_URL": "https://keystone.example.org:5000/v3", "OS_USERNAME": "alice",
        "OS_PASSWORD": SECRET, "OS_PROJECT_NAME": "research",
        "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_REGION_NAME": "RegionTwo", "OS_INTERFACE": "internal"})
    assert creds.keystone and creds.can_authenticate
    args, kwargs = creds.auth_arguments()
    assert args == ("https://keystone.example.org:5000/v3", "alice", SECRET)
    assert kwargs["auth_version"] == "3"
    assert kwargs["os_options"] == {
        "project_name": "research", "project_domain_name": "Default",
        "user_domain_name": "Default", "region_name": "RegionTwo",
        "endpoint_type": "internal", "service_type": "object-store"}


def test_keystone_defaults_domains_and_interface():
    creds = Credentials(auth_url="http://k:5000/v3", user="bob", key=SECRET,
                        project_name="p")
    options = creds.auth_arguments()[1]["os_options"]
    assert options["user_domain_id"] == "default"
    assert options["project_domain_id"] == "default"
    assert options["endpoint_type"] == "public"


def test_keystone_application_credential():
    creds = Credentials.from_environ({
        "OS_AUTH_URL": "http://k:5000/v3", "OS_AUTH_TYPE": "v3applicationcredential",
        "OS_APPLICATION_CREDENTIAL_ID": "abc123",
        "OS_APPLICATION_CREDENTIAL_SECRET": SECRET})
    assert creds.keystone and creds.can_authenticate
    options = creds.auth_arguments()[1]["os_options"]
    assert options["auth_type"] == "v3applicationcredential"
    assert options["application_credential_id"] == "abc123"
    assert options["application_credential_secret"] == SECRET
    assert "user_domain_id" not in options and "project_domain_id" not in options


def test_explicit_auth_version_wins():
    assert not Credentials(auth_url="http://k/v3", user="u", key="k", auth_version="1.0").keystone
    assert Credentials(auth_url="http://k/identity", user="u", key="k", auth_version="3").keystone


def test_preauthenticated_from_os_variables():
    creds = Credentials.from_environ({"OS_STORAGE_URL": "http://s/v1/AUTH_x",
                                      "OS_AUTH_TOKEN": SECRET})
    assert creds.preauth_url == "http://s/v1/AUTH_x" and creds.preauth_token == SECRET
    assert not creds.can_authenticate
    assert not creds.is_empty


def test_given_credentials_are_kept_over_environment():
    given = Credentials(auth_url="http://given/auth/v1.0", user="u", key="k")
    assert given.or_environ({"ST_AUTH": "http://env/auth/v1.0"}) is given
    fallback = Credentials().or_environ({"ST_AUTH": "http://env/auth/v1.0", "ST_USER": "e",
                                         "ST_KEY": "k"})
    assert fallback.auth_url == "http://env/auth/v1.0"


def test_no_secret_in_repr_or_description():
    creds = Credentials(auth_url="http://k/v3", user="u", key=SECRET,
                        application_credential_secret=SECRET + "2",
                        preauth_url="http://s/v1/AUTH_x", preauth_token=SECRET + "3")
    for text in (repr(creds), str(creds), creds.describe()):
        assert SECRET not in text


def test_no_password_of_a_url_in_repr_or_description():
    creds = Credentials(auth_url=f"http://front:{SECRET}@k/auth/v1.0", user="u", key="k",
                        preauth_url=f"https://front:{SECRET}@s/v1/AUTH_x")
    for text in (repr(creds), str(creds), creds.describe()):
        assert SECRET not in text and "://front:***@" in text, text
