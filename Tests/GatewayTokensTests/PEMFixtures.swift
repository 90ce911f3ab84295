/// Test-only fixtures made with `openssl req -x509 -newkey …` (throwaway keys, never used anywhere else).
enum PEMFixtures {
    static let ecCertificate = """
        -----BEGIN CERTIFICATE-----
        MIIBjzCCATWgAwIBAgIUIbPDdg84N71oXCfapX5xjlw3T6MwCgYIKoZIzj0EAwIw
        HTEbMBkGA1UEAwwScG9ydGN1bGxpcy10ZXN0LWVjMB4XDTI2MTEyOTA0MDkyOFoX
        DTM2MTEyNjA0MDkyOFowHTEbMBkGA1UEAwwScG9ydGN1bGxpcy10ZXN0LWVjMFkw
        EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPcyUXPmUMWLKQanriWg41CsFHm9bvpkp
        jFPLBFP8uE3CTFOU4bYmoh5xNjM4pR5zNP2MT0GW1Lyi+VVWdnTGc6NTMFEwHQYD
        VR0OBBYEFGkHUBs2iYuMzt9aN2Zmsrk77gKyMB8GA1UdIwQYMBaAFGkHUBs2iYuM
        zt9aN2Zmsrk77gKyMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIg
        f7bXpVvWKjD7DWg3krIvHJIavPTu7nqP6F6ek4BN0w4CIQDlVSEyg6LYtpwkQF7n
        H8pN1+gsTdoihED/tz2ZNGd/gQ==
        -----END CERTIFICATE-----
        """

    static let ecPublicKey = """
        -----BEGIN PUBLIC KEY-----
        MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEPcyUXPmUMWLKQanriWg41CsFHm9b
        vpkpjFPLBFP8uE3CTFOU4bYmoh5xNjM4pR5zNP2MT0GW1Lyi+VVWdnTGcw==
        -----END PUBLIC KEY-----
        """

    static let ecPrivateKey = """
        -----BEGIN PRIVATE KEY-----
        MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgFqVBpRUyq3ZWIX0e
        Bb+Q+s62MtA7ObAL8RXe1Yn2dZ2hRANCAAQ9zJRc+ZQxYspBqeuJaDjUKwUeb1u+
        mSmMU8sEU/y4TcJMU5ThtiaiHnE2MzilHnM0/YxPQZbUvKL5VVZ2dMZz
        -----END PRIVATE KEY-----
        """

    static let ec384Certificate = """
        -----BEGIN CERTIFICATE-----
        MIIB0jCCAVigAwIBAgIUWLW0+3VScTrRhfDhRWeJU9jXiYEwCgYIKoZIzj0EAwIw
        IDEeMBwGA1UEAwwVcG9ydGN1bGxpcy10ZXN0LWVjMzg0MB4XDTI2MTEyOTA0MDky
        OFoXDTM2MTEyNjA0MDkyOFowIDEeMBwGA1UEAwwVcG9ydGN1bGxpcy10ZXN0LWVj
        Mzg0MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE9BGqauFPeE8jFprgGUfbBNx48EKp
        TZL8ZNO2ku+2jxl5myUSANZTdyk+ppmgQZicprU5GWlZQvDVmeA1v+66ETw3/Vmb
        rNTgkUivNWgIW7I4iKRTS0fly11/gDoPta3xo1MwUTAdBgNVHQ4EFgQUsjEKwtow
        xNvCpxC9NqKQ3QCWfTwwHwYDVR0jBBgwFoAUsjEKwtowxNvCpxC9NqKQ3QCWfTww
        DwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNoADBlAjEAkfy4cEp7aw6FFI7r
        0ZUYmbgxyBASF1YL1Q1X8SdEtD2Zigz6PQE+8Gaszo4wbbovAjAgVtwK7HZRYO5h
        t1XPjhLBd+OdYrgB+PLzSyLFJsL1tqyCb/6Nzu2tUKKJz3pUi6s=
        -----END CERTIFICATE-----
        """

    static let ec384PublicKey = """
        -----BEGIN PUBLIC KEY-----
        MHYwEAYHKoZIzj0CAQYFK4EEACIDYgAE9BGqauFPeE8jFprgGUfbBNx48EKpTZL8
        ZNO2ku+2jxl5myUSANZTdyk+ppmgQZicprU5GWlZQvDVmeA1v+66ETw3/VmbrNTg
        kUivNWgIW7I4iKRTS0fly11/gDoPta3x
        -----END PUBLIC KEY-----
        """

    static let edCertificate = """
        -----BEGIN CERTIFICATE-----
        MIIBTzCCAQGgAwIBAgIUHISBbLR8Iv5OTpeQf2kv+9neU/owBQYDK2VwMB0xGzAZ
        BgNVBAMMEnBvcnRjdWxsaXMtdGVzdC1lZDAeFw0yNjExMjkwNDA5MjhaFw0zNjEx
        MjYwNDA5MjhaMB0xGzAZBgNVBAMMEnBvcnRjdWxsaXMtdGVzdC1lZDAqMAUGAytl
        cAMhAPkoLKcHVDqvjXRAcvcgPzUU3qeiq+09srxT2gR1L9/Co1MwUTAdBgNVHQ4E
        FgQUEh9b+3dUGbIXjmcbEWCaWDMNowowHwYDVR0jBBgwFoAUEh9b+3dUGbIXjmcb
        EWCaWDMNowowDwYDVR0TAQH/BAUwAwEB/zAFBgMrZXADQQDtOf3BgXN5BE1FHBry
        ja9kqBMzo6e0Ac57kfCUMWSgoHkuvOhAeVlSAuXbQDrVwuOMm0mSaW16ZTDWINfr
        lqoL
        -----END CERTIFICATE-----
        """

    static let edPublicKey = """
        -----BEGIN PUBLIC KEY-----
        MCowBQYDK2VwAyEA+SgspwdUOq+NdEBy9yA/NRTep6Kr7T2yvFPaBHUv38I=
        -----END PUBLIC KEY-----
        """

    static let rsaCertificate = """
        -----BEGIN CERTIFICATE-----
        MIIDHTCCAgWgAwIBAgIUWkJmXl6Nc27wjpCzcbvUxkNJFaQwDQYJKoZIhvcNAQEL
        BQAwHjEcMBoGA1UEAwwTcG9ydGN1bGxpcy10ZXN0LXJzYTAeFw0yNjExMjkwNDA5
        MjhaFw0zNjExMjYwNDA5MjhaMB4xHDAaBgNVBAMME3BvcnRjdWxsaXMtdGVzdC1y
        c2EwggEiMA0GCSqGSIb3DQEBAQUAA4IBDwAwggEKAoIBAQDTAnH+Kxh9Rn5tknaY
        LE4HTI8ac40bjQR/MgKggNFSQD/y3uNrd89IuOv1115gIBpb67DnSJQVZAinSthO
        fYoLVk2AyIAPBPRuqN5ns2V9vQBz1chM1MRsjVSFf0TrHDQiF2lmggs8zu2xzcXa
        QD5//nFElWyF3k2JlwsgQ8lhVNd9CQYYPgAKktBjCImM+zov3kmREGoRB/kokzPg
        XJg5j25xfLTCJoSYzFw/dlpEWp1Q194RH81ldgQZu/tMiuiwfSXBLqU+h9GACFb/
        /qtZ9FQAH1j9jHblxtthSShdvoGxvKQy3Q6rWKRrae31pwj1e2EqC8kJxESZDANy
        P1ZHAgMBAAGjUzBRMB0GA1UdDgQWBBTlGeJ4J83uxMqG4H1CAZaMDUYMwjAfBgNV
        HSMEGDAWgBTlGeJ4J83uxMqG4H1CAZaMDUYMwjAPBgNVHRMBAf8EBTADAQH/MA0G
        CSqGSIb3DQEBCwUAA4IBAQAyM9gPmJQ1Z0hy4CqSPrHzThnW+XsQBrXj/NWE/VUR
        P6b7R8dV7zBq9VN9J1GSN/Lx8mexp0+//qXHSupg4RSh/xJx0NLQ0bnSNecFq2ON
        8m6liCd0N4Bi/Ytoai3/dXlXHSdUgyWbxFrIRDylbVs/zsQL7+PIS+fFoFHxmfhr
        ozRHyIjTiedXeLd8JXjQ6zoG5UcNUvGkHYQ2RwHcNbh6dZkZVwXw55dS2Cwuxp/P
        Jl5QKmKjGNJ1z+G5/zYE3QbTDs+QpViGABtYuCGo08a3P2b+VNh/DYHTlvSlm7yL
        tf5I3PMr7GJdYg9XYtjNERJQ91vkdmBLwrn6guGex8Yx
        -----END CERTIFICATE-----
        """

    static let rsaPublicKey = """
        -----BEGIN PUBLIC KEY-----
        MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0wJx/isYfUZ+bZJ2mCxO
        B0yPGnONG40EfzICoIDRUkA/8t7ja3fPSLjr9ddeYCAaW+uw50iUFWQIp0rYTn2K
        C1ZNgMiADwT0bqjeZ7Nlfb0Ac9XITNTEbI1UhX9E6xw0IhdpZoILPM7tsc3F2kA+
        f/5xRJVshd5NiZcLIEPJYVTXfQkGGD4ACpLQYwiJjPs6L95JkRBqEQf5KJMz4FyY
        OY9ucXy0wiaEmMxcP3ZaRFqdUNfeER/NZXYEGbv7TIrosH0lwS6lPofRgAhW//6r
        WfRUAB9Y/Yx25cbbYUkoXb6BsbykMt0Oq1ika2nt9acI9XthKgvJCcREmQwDcj9W
        RwIDAQAB
        -----END PUBLIC KEY-----
        """

}
