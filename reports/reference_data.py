"""Published numbers, copied verbatim from the papers' tables (``reference/*.csv`` of the
project's shared notes). Kept as text in a module so that they ship with the package."""

FCL_MICCAI2021_CSV = """\
experiment,pretrain_dataset,finetune_dataset,finetune_mode,method,labeled_patients,dice_mean,dice_std
table1_local_finetune,ACDC,ACDC,local,Random init,1,0.280,0.037
table1_local_finetune,ACDC,ACDC,local,Random init,2,0.414,0.070
table1_local_finetune,ACDC,ACDC,local,Random init,4,0.618,0.026
table1_local_finetune,ACDC,ACDC,local,Random init,8,0.766,0.027
table1_local_finetune,ACDC,ACDC,local,Local CL,1,0.320,0.106
table1_local_finetune,ACDC,ACDC,local,Local CL,2,0.456,0.095
table1_local_finetune,ACDC,ACDC,local,Local CL,4,0.637,0.043
table1_local_finetune,ACDC,ACDC,local,Local CL,8,0.770,0.029
table1_local_finetune,ACDC,ACDC,local,FedRotation,1,0.357,0.058
table1_local_finetune,ACDC,ACDC,local,FedRotation,2,0.508,0.054
table1_local_finetune,ACDC,ACDC,local,FedRotation,4,0.660,0.021
table1_local_finetune,ACDC,ACDC,local,FedRotation,8,0.783,0.029
table1_local_finetune,ACDC,ACDC,local,FedSimCLR,1,0.288,0.049
table1_local_finetune,ACDC,ACDC,local,FedSimCLR,2,0.435,0.046
table1_local_finetune,ACDC,ACDC,local,FedSimCLR,4,0.619,0.032
table1_local_finetune,ACDC,ACDC,local,FedSimCLR,8,0.765,0.033
table1_local_finetune,ACDC,ACDC,local,FedSwAV,1,0.323,0.066
table1_local_finetune,ACDC,ACDC,local,FedSwAV,2,0.480,0.067
table1_local_finetune,ACDC,ACDC,local,FedSwAV,4,0.659,0.019
table1_local_finetune,ACDC,ACDC,local,FedSwAV,8,0.782,0.030
table1_local_finetune,ACDC,ACDC,local,FedCA,1,0.280,0.047
table1_local_finetune,ACDC,ACDC,local,FedCA,2,0.417,0.042
table1_local_finetune,ACDC,ACDC,local,FedCA,4,0.610,0.030
table1_local_finetune,ACDC,ACDC,local,FedCA,8,0.766,0.029
table1_local_finetune,ACDC,ACDC,local,FCL,1,0.506,0.056
table1_local_finetune,ACDC,ACDC,local,FCL,2,0.631,0.051
table1_local_finetune,ACDC,ACDC,local,FCL,4,0.745,0.017
table1_local_finetune,ACDC,ACDC,local,FCL,8,0.824,0.025
table2_federated_finetune,ACDC,ACDC,federated,Random init,1,0.445,0.012
table2_federated_finetune,ACDC,ACDC,federated,Random init,2,0.572,0.061
table2_federated_finetune,ACDC,ACDC,federated,Random init,4,0.764,0.017
table2_federated_finetune,ACDC,ACDC,federated,Random init,8,0.834,0.011
table2_federated_finetune,ACDC,ACDC,federated,Local CL,1,0.473,0.013
table2_federated_finetune,ACDC,ACDC,federated,Local CL,2,0.717,0.024
table2_federated_finetune,ACDC,ACDC,federated,Local CL,4,0.784,0.015
table2_federated_finetune,ACDC,ACDC,federated,Local CL,8,0.847,0.009
table2_federated_finetune,ACDC,ACDC,federated,FedRotation,1,0.516,0.015
table2_federated_finetune,ACDC,ACDC,federated,FedRotation,2,0.627,0.074
table2_federated_finetune,ACDC,ACDC,federated,FedRotation,4,0.821,0.015
table2_federated_finetune,ACDC,ACDC,federated,FedRotation,8,0.867,0.010
table2_federated_finetune,ACDC,ACDC,federated,FedSimCLR,1,0.395,0.023
table2_federated_finetune,ACDC,ACDC,federated,FedSimCLR,2,0.576,0.046
table2_federated_finetune,ACDC,ACDC,federated,FedSimCLR,4,0.788,0.014
table2_federated_finetune,ACDC,ACDC,federated,FedSimCLR,8,0.859,0.011
table2_federated_finetune,ACDC,ACDC,federated,FedSwAV,1,0.500,0.015
table2_federated_finetune,ACDC,ACDC,federated,FedSwAV,2,0.594,0.058
table2_federated_finetune,ACDC,ACDC,federated,FedSwAV,4,0.815,0.015
table2_federated_finetune,ACDC,ACDC,federated,FedSwAV,8,0.862,0.010
table2_federated_finetune,ACDC,ACDC,federated,FedCA,1,0.397,0.020
table2_federated_finetune,ACDC,ACDC,federated,FedCA,2,0.561,0.047
table2_federated_finetune,ACDC,ACDC,federated,FedCA,4,0.784,0.015
table2_federated_finetune,ACDC,ACDC,federated,FedCA,8,0.858,0.011
table2_federated_finetune,ACDC,ACDC,federated,FCL,1,0.646,0.052
table2_federated_finetune,ACDC,ACDC,federated,FCL,2,0.824,0.004
table2_federated_finetune,ACDC,ACDC,federated,FCL,4,0.871,0.007
table2_federated_finetune,ACDC,ACDC,federated,FCL,8,0.894,0.006
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Random init,1,0.792,0.051
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Random init,2,0.814,0.049
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Random init,4,0.827,0.049
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Random init,8,0.859,0.039
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Local CL,1,0.798,0.053
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Local CL,2,0.811,0.045
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Local CL,4,0.825,0.052
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,Local CL,8,0.855,0.044
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedRotation,1,0.800,0.054
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedRotation,2,0.816,0.055
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedRotation,4,0.834,0.052
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedRotation,8,0.864,0.037
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSimCLR,1,0.797,0.048
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSimCLR,2,0.799,0.048
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSimCLR,4,0.815,0.053
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSimCLR,8,0.854,0.040
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSwAV,1,0.802,0.044
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSwAV,2,0.814,0.054
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSwAV,4,0.842,0.039
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedSwAV,8,0.862,0.040
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedCA,1,0.790,0.043
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedCA,2,0.802,0.050
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedCA,4,0.817,0.056
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FedCA,8,0.861,0.037
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FCL,1,0.814,0.046
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FCL,2,0.823,0.048
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FCL,4,0.849,0.038
transfer_acdc_to_hvsmr,ACDC,HVSMR2016,unspecified,FCL,8,0.872,0.033
"""

CHAITANYA_NEURIPS2020_ACDC_CSV = """\
encoder_init/decoder_init,labeled_volumes,dice_mean
random/random,1,0.614
random/random,2,0.702
random/random,8,0.844
G^R/random,1,0.631
G^R/random,2,0.729
G^R/random,8,0.847
G^D-/random,1,0.683
G^D-/random,2,0.774
G^D-/random,8,0.864
G^D/random,1,0.691
G^D/random,2,0.784
G^D/random,8,0.870
G^R/L^R,1,0.668
G^R/L^R,2,0.760
G^R/L^R,8,0.850
G^R/L^D,1,0.638
G^R/L^D,2,0.740
G^R/L^D,8,0.855
G^D/L^R,1,0.725
G^D/L^R,2,0.789
G^D/L^R,8,0.872
Rotation,1,0.599
Rotation,2,0.699
Rotation,8,0.849
Inpainting,1,0.612
Inpainting,2,0.697
Inpainting,8,0.837
Context Restoration,1,0.625
Context Restoration,2,0.714
Context Restoration,8,0.851
"""
